//! The per-session limits a client may choose, within the maxima the server allows.

use crate::error::ServiceError;
use sandcell_session::Limits;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

/// The limits of one session, as the API shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionLimits {
    /// Memory of the whole session, in MiB.
    pub memory_mib: u64,
    /// Processes and threads the session may run at once.
    pub processes: u64,
    /// Time limit of one execution, in seconds.
    pub timeout_secs: f64,
    /// Largest single file the code may write, in MiB.
    pub file_size_mib: u64,
    /// Total size the working directory may reach, in MiB.
    pub disk_quota_mib: u64,
}

/// Limits asked for when a session is created; each one left out takes the server's default.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsRequest {
    /// At least 64.
    #[schema(minimum = 64)]
    pub memory_mib: Option<u64>,
    /// At least 8.
    #[schema(minimum = 8)]
    pub processes: Option<u64>,
    /// More than 0.
    #[schema(exclusive_minimum = 0)]
    pub timeout_secs: Option<f64>,
    /// At least 1.
    #[schema(minimum = 1)]
    pub file_size_mib: Option<u64>,
    /// At least 1.
    #[schema(minimum = 1)]
    pub disk_quota_mib: Option<u64>,
}

impl SessionLimits {
    /// The limits of a session nobody asked anything of (`sandcell run`'s defaults).
    pub fn standard() -> Self {
        let limits = Limits::default();
        Self {
            memory_mib: limits.memory_mib,
            processes: limits.processes,
            timeout_secs: limits.timeout.as_secs_f64(),
            file_size_mib: limits.file_size_mib,
            disk_quota_mib: limits.workdir_quota_mib,
        }
    }

    /// Each limit no higher than in `max`.
    pub fn capped_by(&self, max: &SessionLimits) -> Self {
        Self {
            memory_mib: self.memory_mib.min(max.memory_mib),
            processes: self.processes.min(max.processes),
            timeout_secs: self.timeout_secs.min(max.timeout_secs),
            file_size_mib: self.file_size_mib.min(max.file_size_mib),
            disk_quota_mib: self.disk_quota_mib.min(max.disk_quota_mib),
        }
    }

    pub fn timeout(&self) -> Duration {
        // Checked when the limits were chosen; a configured maximum past what a Duration
        // holds means "no limit" rather than a panic.
        Duration::try_from_secs_f64(self.timeout_secs).unwrap_or(Duration::MAX)
    }

    /// The time limit of one execution that asked for `asked` seconds (the session's own
    /// limit when `None`): more than 0 and at most the session's limit.
    pub fn execution_timeout(&self, asked: Option<f64>) -> Result<Duration, ServiceError> {
        match asked {
            None => Ok(self.timeout()),
            Some(secs) if secs > 0.0 && secs <= self.timeout_secs => {
                Ok(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
            }
            Some(secs) => Err(ServiceError::invalid(format!(
                "timeout_secs must be more than 0 and at most the session's limit of {} s, not {secs}.",
                self.timeout_secs
            ))),
        }
    }

    /// The runtime's limits for a session with these.
    pub fn to_runtime(&self) -> Limits {
        Limits {
            memory_mib: self.memory_mib,
            processes: self.processes,
            timeout: self.timeout(),
            file_size_mib: self.file_size_mib,
            workdir_quota_mib: self.disk_quota_mib,
            ..Limits::default()
        }
    }
}

/// How a door names each limit in its messages (`limits.memory_mib`, `--memory`, …).
#[derive(Debug, Clone, Copy)]
pub struct LimitNames {
    pub memory: &'static str,
    pub processes: &'static str,
    pub timeout: &'static str,
    pub file_size: &'static str,
    pub disk_quota: &'static str,
}

impl LimitNames {
    /// The fields of a JSON `limits` object.
    pub const FIELDS: Self = Self {
        memory: "limits.memory_mib",
        processes: "limits.processes",
        timeout: "limits.timeout_secs",
        file_size: "limits.file_size_mib",
        disk_quota: "limits.disk_quota_mib",
    };
}

/// The smallest value of each limit that still lets Python start and work.
const MIN_MEMORY_MIB: u64 = 64;
const MIN_PROCESSES: u64 = 8;
const MIN_FILE_SIZE_MIB: u64 = 1;
const MIN_DISK_QUOTA_MIB: u64 = 1;
/// The longest time limit anyone may set (about 31 years): larger numbers are typos.
const MAX_TIMEOUT_SECS: f64 = 1e9;

impl SessionLimits {
    /// No ceiling at all: for the command line (the user's own machine) and for the
    /// operator's own ceilings, which only the minimums bound.
    pub fn unbounded() -> Self {
        Self {
            memory_mib: u64::MAX,
            processes: u64::MAX,
            timeout_secs: MAX_TIMEOUT_SECS,
            file_size_mib: u64::MAX,
            disk_quota_mib: u64::MAX,
        }
    }
}

impl LimitsRequest {
    /// The limits of a new session: what was asked, else the defaults (the standard
    /// limits within `max`); an error names the first limit out of range.
    pub fn resolve(&self, max: &SessionLimits) -> Result<SessionLimits, ServiceError> {
        self.resolve_named(max, &LimitNames::FIELDS)
    }

    /// [`resolve`](Self::resolve), naming the limits as `names` says.
    pub fn resolve_named(
        &self,
        max: &SessionLimits,
        names: &LimitNames,
    ) -> Result<SessionLimits, ServiceError> {
        let default = SessionLimits::standard().capped_by(max);
        let whole = |name: &str, asked: Option<u64>, default: u64, min: u64, max: u64| {
            let value = asked.unwrap_or(default);
            if value < min {
                Err(ServiceError::invalid(format!(
                    "{name} must be at least {min}, not {value}."
                )))
            } else if value > max {
                Err(ServiceError::invalid(format!(
                    "{name} must be at most {max} on this server, not {value}."
                )))
            } else {
                Ok(value)
            }
        };
        let timeout_secs = self.timeout_secs.unwrap_or(default.timeout_secs);
        if !(timeout_secs > 0.0 && timeout_secs <= max.timeout_secs) {
            return Err(ServiceError::invalid(format!(
                "{} must be more than 0 and at most {} seconds, not {timeout_secs}.",
                names.timeout, max.timeout_secs
            )));
        }
        Ok(SessionLimits {
            memory_mib: whole(
                names.memory,
                self.memory_mib,
                default.memory_mib,
                MIN_MEMORY_MIB,
                max.memory_mib,
            )?,
            processes: whole(
                names.processes,
                self.processes,
                default.processes,
                MIN_PROCESSES,
                max.processes,
            )?,
            timeout_secs,
            file_size_mib: whole(
                names.file_size,
                self.file_size_mib,
                default.file_size_mib,
                MIN_FILE_SIZE_MIB,
                max.file_size_mib,
            )?,
            disk_quota_mib: whole(
                names.disk_quota,
                self.disk_quota_mib,
                default.disk_quota_mib,
                MIN_DISK_QUOTA_MIB,
                max.disk_quota_mib,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max() -> SessionLimits {
        SessionLimits {
            memory_mib: 1024,
            processes: 64,
            timeout_secs: 30.0,
            file_size_mib: 10,
            disk_quota_mib: 100,
        }
    }

    #[test]
    fn defaults_stay_within_the_maxima() {
        let limits = LimitsRequest::default().resolve(&max()).unwrap();
        assert_eq!(limits, max());
        let generous = SessionLimits {
            memory_mib: u64::MAX / 2,
            processes: 10_000,
            timeout_secs: 1e6,
            file_size_mib: 1 << 20,
            disk_quota_mib: 1 << 20,
        };
        assert_eq!(
            LimitsRequest::default().resolve(&generous).unwrap(),
            SessionLimits::standard()
        );
    }

    #[test]
    fn asked_limits_are_checked_against_the_maxima() {
        let asked = LimitsRequest {
            memory_mib: Some(512),
            timeout_secs: Some(2.5),
            ..LimitsRequest::default()
        };
        let limits = asked.resolve(&max()).unwrap();
        assert_eq!(limits.memory_mib, 512);
        assert_eq!(limits.timeout(), Duration::from_millis(2500));
        assert_eq!(limits.to_runtime().memory_mib, 512);

        let too_much = LimitsRequest {
            memory_mib: Some(4096),
            ..LimitsRequest::default()
        };
        let error = too_much.resolve(&max()).unwrap_err();
        assert!(error.to_string().contains("memory_mib"), "{error}");
        for timeout in [0.0, -1.0, 31.0] {
            let asked = LimitsRequest {
                timeout_secs: Some(timeout),
                ..LimitsRequest::default()
            };
            assert!(asked.resolve(&max()).is_err(), "{timeout}");
        }
    }
}
