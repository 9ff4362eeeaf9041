//! [`SandcellMcp`]: one client's connection, its tools and its resources.

use crate::error::{protocol_error, resource_error, tool_error};
use crate::params::{
    CreateSession, CreatedSession, FileList, FileRead, InstallPackages, ListedFile, MaybeSessionId,
    ReadFile, RunOutput, RunPython, SessionId, SessionList, SessionSummary, UploadFile,
};
use crate::paths::{file_path, file_uri, parse_file_uri, MOUNT};
use crate::results::{execution_result, file_contents, file_part_result, to_json};
use base64::Engine;
use rmcp::handler::server::common::schema_for_output;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, InitializeRequestParams, InitializeResult,
    ListResourceTemplatesResult, ListResourcesResult, PaginatedRequestParams,
    ProgressNotificationParam, ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, Resource, ResourceTemplate, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler};
use sandcell_service::{
    ExecutionLog, LimitsRequest, LoggedEvent, PageRequest, Service, ServiceError, SessionLimits,
    User, WorkDir,
};
use sandcell_session::ExecEvent;
use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// How long a call waits for a cancelled run of its session to finish being interrupted,
/// rather than finding the session busy.
const INTERRUPT_GRACE: Duration = Duration::from_secs(5);
/// The most `read_file` returns at once, and the largest file a resource read returns.
const MAX_READ_BYTES: u64 = 8 * 1024 * 1024;
/// Files after which a `resources/list` page ends (at the end of that session's files).
const MAX_LISTED_RESOURCES: usize = 1000;
/// The protocol versions this door is tested against: what clients deploy, and the
/// newest the SDK knows.
const PROTOCOL_VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V_2025_06_18,
    ProtocolVersion::V_2025_11_25,
    ProtocolVersion::V_2026_07_28,
];

/// What the model is told about the whole server.
const INSTRUCTIONS: &str = "sandcell runs Python in stateful, sandboxed sessions: variables, imports and files persist between run_python calls. numpy, pandas and matplotlib are installed (plots are returned as PNG images); files live in /mnt/data (upload_file, list_files, read_file); the network is closed unless the server allows hosts (create_session's allow_net, within the server's list; HTTP and HTTPS then go through the proxy in HTTP_PROXY), and install_packages installs packages when the server has a package index. Without a session_id every tool uses this connection's default session.";

/// How a door's connections are set up.
#[derive(Debug, Clone)]
pub struct McpConfig {
    /// The limits of each connection's default session, and of `create_session` without
    /// limits; `None`: the core's defaults within the service's ceilings.
    pub default_limits: Option<SessionLimits>,
    /// The largest file `upload_file` accepts, in bytes.
    pub max_upload_bytes: u64,
    /// A directory each connection's default session works in (its `/mnt/data`, kept
    /// afterwards) instead of a directory of its own.
    pub default_workdir: Option<PathBuf>,
    /// The configured environment each connection's default session runs in; `None`: the
    /// base one. `create_session` names its own.
    pub default_environment: Option<String>,
}

/// A `run_python` call under way.
#[derive(Clone)]
struct Run {
    log: Arc<ExecutionLog>,
    /// Cancelled when the client cancels the call (then the code is being interrupted).
    call: CancellationToken,
}

/// Where a default session's id is kept once it is created.
type DefaultSlot = Arc<Mutex<Option<String>>>;

/// The default sessions of requests made without a connection (the stateless HTTP of
/// protocol versions without `initialize`): one per user, shared by all such requests.
#[derive(Clone, Default)]
pub struct StatelessDefaults(Arc<std::sync::Mutex<HashMap<i64, DefaultSlot>>>);

/// Whom a connection acts for.
#[derive(Clone)]
enum Caller {
    /// The one user of this process (stdio).
    Fixed(User),
    /// The user the HTTP server authenticated for each request (a [`User`] in the
    /// request's extensions); the first request's user owns the connection.
    PerRequest {
        owner: Arc<OnceLock<i64>>,
        stateless_defaults: StatelessDefaults,
    },
}

/// One client's connection: the user it acts for and its default session.
#[derive(Clone)]
pub struct SandcellMcp {
    service: Arc<Service>,
    caller: Caller,
    config: Arc<McpConfig>,
    /// Created on first use by a tool called without `session_id`.
    default_session: DefaultSlot,
    /// The run under way in each session, as this connection started it.
    runs: Arc<std::sync::Mutex<HashMap<String, Run>>>,
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl SandcellMcp {
    /// A connection acting for `user` (stdio: the process's own user).
    pub fn new(service: Arc<Service>, user: User, config: McpConfig) -> Self {
        Self::with_caller(service, Caller::Fixed(user), config)
    }

    /// A connection whose requests each carry the [`User`] the HTTP server authenticated,
    /// in the extensions of their `http::request::Parts`; requests without a connection
    /// share their user's default session in `stateless_defaults`.
    pub fn authenticated_per_request(
        service: Arc<Service>,
        config: McpConfig,
        stateless_defaults: StatelessDefaults,
    ) -> Self {
        let caller = Caller::PerRequest {
            owner: Arc::default(),
            stateless_defaults,
        };
        Self::with_caller(service, caller, config)
    }

    fn with_caller(service: Arc<Service>, caller: Caller, config: McpConfig) -> Self {
        Self {
            service,
            caller,
            config: Arc::new(config),
            default_session: Arc::default(),
            runs: Arc::default(),
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "Run Python code as one cell of a stateful IPython session (variables, imports and files persist between calls). numpy, pandas and matplotlib are installed; plots are returned as PNG images. The working directory is /mnt/data, where uploaded files are and where files to hand back should be written. There is no network access unless the server allows this session hosts (see create_session). Returns what was printed, the value of the last expression, images, links to the files created or changed, and the traceback if the code raised.",
        output_schema = schema_for_output::<RunOutput>()
    )]
    async fn run_python(
        &self,
        Parameters(args): Parameters<RunPython>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(self.run(args, context).await.unwrap_or_else(tool_error))
    }

    #[tool(
        description = "Install Python packages into a session from the server's package index (as %pip install does): each a package name with optional extras and version specifiers, such as \"requests\" or \"numpy>=1.26,<2\". They go into the session's own /mnt/data/.packages and can be imported at once. Returns pip's output like run_python; an error when the server has no package index or pip failed.",
        output_schema = schema_for_output::<RunOutput>()
    )]
    async fn install_packages(
        &self,
        Parameters(args): Parameters<InstallPackages>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(self.install(args, context).await.unwrap_or_else(tool_error))
    }

    #[tool(
        description = "Create a new Python session, separate from the others (its own variables and its own /mnt/data), optionally in one of the server's configured environments (more packages on top of the usual ones). Returns its session_id, to pass to the other tools.",
        output_schema = schema_for_output::<CreatedSession>()
    )]
    async fn create_session(
        &self,
        Parameters(args): Parameters<CreateSession>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let created = async {
            let user = self.user(&context)?;
            let limits = match args.limits {
                None => self.default_limits()?,
                Some(limits) => {
                    LimitsRequest::from(limits).resolve(&self.service.config.max_limits)?
                }
            };
            let sessions = &self.service.sessions;
            let network = sessions.network_for(args.allow_net.as_deref())?;
            let session = sessions
                .create(&user, limits, network, args.environment.as_deref())
                .await?;
            structured(&CreatedSession {
                session_id: session.id,
            })
        };
        Ok(created.await.unwrap_or_else(tool_error))
    }

    #[tool(
        description = "List your Python sessions with their state (idle, busy, or stopped: variables gone, files kept).",
        output_schema = schema_for_output::<SessionList>()
    )]
    async fn list_sessions(
        &self,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let listed = async {
            let user = self.user(&context)?;
            let default = self.default_slot(&user, &context).lock().await.clone();
            let mut sessions = Vec::new();
            let mut page = PageRequest::default();
            loop {
                let found = self.service.sessions.list(&user, &page).await?;
                sessions.extend(
                    found
                        .data
                        .into_iter()
                        .map(|info| SessionSummary::new(info, default.as_deref())),
                );
                match found.next {
                    Some(next) => page.after = Some(next),
                    None => break,
                }
            }
            structured(&SessionList { sessions })
        };
        Ok(listed.await.unwrap_or_else(tool_error))
    }

    #[tool(description = "Close a Python session: stop it and delete its files in /mnt/data.")]
    async fn close_session(
        &self,
        Parameters(SessionId { session_id }): Parameters<SessionId>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let closed = async {
            let user = self.user(&context)?;
            self.service.sessions.delete(&user, &session_id).await?;
            let slot = self.default_slot(&user, &context);
            let mut default = slot.lock().await;
            if default.as_deref() == Some(session_id.as_str()) {
                *default = None;
            }
            Ok(text_result(format!("Session {session_id} is closed.")))
        };
        Ok(closed.await.unwrap_or_else(tool_error))
    }

    #[tool(
        description = "Restart a session's Python process: its variables are gone, its files in /mnt/data remain."
    )]
    async fn restart_session(
        &self,
        Parameters(SessionId { session_id }): Parameters<SessionId>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let restarted = async {
            let user = self.user(&context)?;
            self.service.sessions.restart(&user, &session_id).await?;
            Ok(text_result(format!(
                "Session {session_id} has a fresh Python process: variables are gone, files in {MOUNT} remain."
            )))
        };
        Ok(restarted.await.unwrap_or_else(tool_error))
    }

    #[tool(
        description = "Interrupt the code running in a session (a KeyboardInterrupt); the session keeps its variables."
    )]
    async fn interrupt(
        &self,
        Parameters(SessionId { session_id }): Parameters<SessionId>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let interrupted = match self
            .user(&context)
            .and_then(|user| self.service.sessions.interrupt(&user, &session_id))
        {
            Ok(true) => text_result(format!(
                "The code running in session {session_id} was interrupted."
            )),
            Ok(false) => text_result(format!("Nothing was running in session {session_id}.")),
            Err(error) => tool_error(error),
        };
        Ok(interrupted)
    }

    #[tool(
        description = "Put a file into a session's /mnt/data (path relative to /mnt/data, or absolute under it), from `text` or from `base64` for binary content. Missing directories are made; a file already there is replaced."
    )]
    async fn upload_file(
        &self,
        Parameters(args): Parameters<UploadFile>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let uploaded = async {
            let user = self.user(&context)?;
            let slot = self.default_slot(&user, &context);
            self.upload(&user, slot, args).await
        };
        Ok(uploaded.await.unwrap_or_else(tool_error))
    }

    #[tool(
        description = "List the files in a session's /mnt/data, with their sizes and MIME types.",
        output_schema = schema_for_output::<FileList>()
    )]
    async fn list_files(
        &self,
        Parameters(MaybeSessionId { session_id }): Parameters<MaybeSessionId>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let listed = async {
            let user = self.user(&context)?;
            let slot = self.default_slot(&user, &context);
            let session_id = self.session_id(&user, slot, session_id).await?;
            let workdir = self.service.sessions.workdir(&user, &session_id).await?;
            let files = blocking(move || Ok(workdir.list()?)).await?;
            let files = files
                .into_iter()
                .map(|file| ListedFile {
                    uri: file_uri(&session_id, &file.path),
                    path: file.path,
                    size: file.size,
                    mime: file.mime,
                    modified: file.modified,
                })
                .collect();
            structured(&FileList { session_id, files })
        };
        Ok(listed.await.unwrap_or_else(tool_error))
    }

    #[tool(
        description = "Read a file of a session's /mnt/data (path relative to /mnt/data, or absolute under it): text for text files, an image for images, base64 otherwise. Large files are read in parts: `offset` is the first byte, `max_bytes` how many (at most 8 MiB); the result gives the file's total size.",
        output_schema = schema_for_output::<FileRead>()
    )]
    async fn read_file(
        &self,
        Parameters(args): Parameters<ReadFile>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let read = async {
            let user = self.user(&context)?;
            let slot = self.default_slot(&user, &context);
            self.read(&user, slot, args).await
        };
        Ok(read.await.unwrap_or_else(tool_error))
    }
}

impl SandcellMcp {
    fn default_limits(&self) -> Result<SessionLimits, ServiceError> {
        match &self.config.default_limits {
            Some(limits) => Ok(limits.clone()),
            None => LimitsRequest::default().resolve(&self.service.config.max_limits),
        }
    }

    /// Where the default session of `user`'s request is kept: the connection's, or, for a
    /// request made without a connection, the user's own.
    fn default_slot(&self, user: &User, context: &RequestContext<RoleServer>) -> DefaultSlot {
        let without_connection = context
            .protocol_version()
            .is_some_and(|version| !version.has_initialize());
        match &self.caller {
            Caller::PerRequest {
                stateless_defaults, ..
            } if without_connection => stateless_defaults
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(user.id)
                .or_default()
                .clone(),
            _ => self.default_session.clone(),
        }
    }

    /// The user a request acts for.
    fn user(&self, context: &RequestContext<RoleServer>) -> Result<User, ServiceError> {
        let owner = match &self.caller {
            Caller::Fixed(user) => return Ok(user.clone()),
            Caller::PerRequest { owner, .. } => owner,
        };
        let user = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<User>())
            .cloned()
            .ok_or_else(|| ServiceError::Unauthorized("This request carries no API key.".into()))?;
        if *owner.get_or_init(|| user.id) != user.id {
            return Err(ServiceError::Unauthorized(
                "This MCP session was started with another API key.".into(),
            ));
        }
        Ok(user)
    }

    /// The session a tool names, or the connection's default one (created now if needed).
    async fn session_id(
        &self,
        user: &User,
        slot: DefaultSlot,
        asked: Option<String>,
    ) -> Result<String, ServiceError> {
        if let Some(id) = asked {
            return Ok(id);
        }
        let mut default = slot.lock().await;
        if let Some(id) = default.as_ref() {
            return Ok(id.clone());
        }
        let limits = self.default_limits()?;
        let sessions = &self.service.sessions;
        let network = sessions.network_for(None)?;
        let environment = self.config.default_environment.as_deref();
        let session = match &self.config.default_workdir {
            Some(dir) => {
                sessions
                    .create_in(user, limits, network, environment, dir.clone())
                    .await?
            }
            None => sessions.create(user, limits, network, environment).await?,
        };
        Ok(default.insert(session.id).clone())
    }

    /// The caller and the session a call that runs something names (or the connection's
    /// default one), once a run there whose call was cancelled has ended.
    async fn call_session(
        &self,
        asked: Option<String>,
        context: &RequestContext<RoleServer>,
    ) -> Result<(User, String), ServiceError> {
        let user = self.user(context)?;
        let slot = self.default_slot(&user, context);
        let session_id = self.session_id(&user, slot, asked).await?;
        self.let_cancelled_run_finish(&session_id).await;
        Ok((user, session_id))
    }

    /// Runs a cell.
    async fn run(
        &self,
        args: RunPython,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ServiceError> {
        let (user, session_id) = self.call_session(args.session_id, &context).await?;
        let log = self
            .service
            .sessions
            .execute(&user, &session_id, args.code, args.timeout_s)
            .await?;
        self.follow(&user, session_id, log, context).await
    }

    /// Installs packages with the session's `%pip` code, reported like a `run_python` run.
    async fn install(
        &self,
        args: InstallPackages,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ServiceError> {
        let (user, session_id) = self.call_session(args.session_id, &context).await?;
        let log = self
            .service
            .sessions
            .install_packages(&user, &session_id, &args.packages)
            .await?;
        self.follow(&user, session_id, log, context).await
    }

    /// Waits for the end of an execution this call started, reporting its output as
    /// progress when the client asked for progress, and interrupting it when the client
    /// cancels the call.
    async fn follow(
        &self,
        user: &User,
        session_id: String,
        log: Arc<ExecutionLog>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ServiceError> {
        self.runs().insert(
            session_id.clone(),
            Run {
                log: log.clone(),
                call: context.ct.clone(),
            },
        );
        let progress_token = context.meta.get_progress_token();
        let mut interrupted = false;
        let mut seen = 0;
        loop {
            let entries = tokio::select! {
                entries = log.entries_from(seen) => entries,
                () = context.ct.cancelled(), if !interrupted => {
                    // The client gave up on the call: stop the code, keep the session.
                    interrupted = true;
                    self.service.sessions.interrupt(user, &session_id)?;
                    continue;
                }
            };
            if entries.is_empty() {
                return Err(ServiceError::Internal(
                    "The execution ended without a result.".into(),
                ));
            }
            seen += entries.len();
            for entry in entries {
                match entry {
                    LoggedEvent::End(result) => {
                        self.forget_run(&session_id, &log);
                        return execution_result(&session_id, result?);
                    }
                    LoggedEvent::Output(ExecEvent::Stdout(text) | ExecEvent::Stderr(text)) => {
                        if let Some(token) = &progress_token {
                            let mut progress =
                                ProgressNotificationParam::new(token.clone(), seen as f64);
                            progress.message = Some(text);
                            // A client that stopped listening only misses progress.
                            let _ = context.peer.notify_progress(progress).await;
                        }
                    }
                    LoggedEvent::Output(_) | LoggedEvent::Restarted => {}
                }
            }
        }
    }

    /// Waits (briefly) for the end of a run in `session_id` whose call was cancelled, so
    /// that the next call finds the session free instead of busy. The SDK cancels a call's
    /// token when the cancellation arrives, before it reads the next request; the
    /// interrupt itself is sent by the cancelled call's own task.
    async fn let_cancelled_run_finish(&self, session_id: &str) {
        let Some(run) = self.runs().get(session_id).cloned() else {
            return;
        };
        if run.call.is_cancelled() {
            // Whatever it ended with was for a call nobody waits for any more.
            let _ = tokio::time::timeout(INTERRUPT_GRACE, run.log.result()).await;
            self.forget_run(session_id, &run.log);
        }
    }

    fn forget_run(&self, session_id: &str, log: &Arc<ExecutionLog>) {
        let mut runs = self.runs();
        if runs
            .get(session_id)
            .is_some_and(|run| Arc::ptr_eq(&run.log, log))
        {
            runs.remove(session_id);
        }
    }

    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Run>> {
        // Only whole entries are inserted and removed: a panic cannot leave the map torn.
        self.runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn upload(
        &self,
        user: &User,
        slot: DefaultSlot,
        args: UploadFile,
    ) -> Result<CallToolResult, ServiceError> {
        let content = match (args.text, args.base64) {
            (Some(text), None) => text.into_bytes(),
            (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|e| ServiceError::invalid(format!("base64 is not valid base64: {e}.")))?,
            _ => {
                return Err(ServiceError::invalid(
                    "Give the file's content as either text or base64 (exactly one of them).",
                ))
            }
        };
        if content.len() as u64 > self.config.max_upload_bytes {
            return Err(ServiceError::invalid(format!(
                "The file is {} bytes; this server accepts uploads of at most {} bytes.",
                content.len(),
                self.config.max_upload_bytes
            )));
        }
        let path = file_path(&args.path)?;
        let session_id = self.session_id(user, slot, args.session_id).await?;
        let workdir = self.service.sessions.workdir(user, &session_id).await?;
        let staging = self.service.config.staging_dir();
        let stored = blocking(move || {
            let mut staged = tempfile::NamedTempFile::new_in(staging)
                .map_err(|e| ServiceError::internal("The upload cannot be staged", &e))?;
            staged
                .write_all(&content)
                .map_err(|e| ServiceError::internal("The upload cannot be staged", &e))?;
            Ok(workdir.place(&path, staged)?)
        })
        .await?;
        Ok(text_result(format!(
            "Wrote {MOUNT}/{} ({} bytes) in session {session_id}.",
            stored.path, stored.size
        )))
    }

    async fn read(
        &self,
        user: &User,
        slot: DefaultSlot,
        args: ReadFile,
    ) -> Result<CallToolResult, ServiceError> {
        let path = file_path(&args.path)?;
        let offset = args.offset.unwrap_or(0);
        let max_bytes = args.max_bytes.unwrap_or(MAX_READ_BYTES);
        if max_bytes == 0 || max_bytes > MAX_READ_BYTES {
            return Err(ServiceError::invalid(format!(
                "max_bytes must be more than 0 and at most {MAX_READ_BYTES}, not {max_bytes}."
            )));
        }
        let session_id = self.session_id(user, slot, args.session_id).await?;
        let workdir = self.service.sessions.workdir(user, &session_id).await?;
        let (bytes, read) = blocking(move || read_part(&workdir, &path, offset, max_bytes)).await?;
        file_part_result(file_uri(&session_id, &read.path), bytes, read)
    }
}

/// Bytes `offset..offset + max_bytes` of a file (fewer at its end), and where they lie.
fn read_part(
    workdir: &WorkDir,
    path: &sandcell_service::FilePath,
    offset: u64,
    max_bytes: u64,
) -> Result<(Vec<u8>, FileRead), ServiceError> {
    let (mut file, info) = workdir.open(path)?;
    let io_error = |e: std::io::Error| ServiceError::internal("The file cannot be read", &e);
    // The size is the file's as opened; the code may change it meanwhile, so the read
    // itself is bounded, not the size trusted.
    if offset > info.size {
        return Err(ServiceError::invalid(format!(
            "offset {offset} is past the end of {MOUNT}/{} ({} bytes).",
            info.path, info.size
        )));
    }
    file.seek(SeekFrom::Start(offset)).map_err(io_error)?;
    let mut bytes = Vec::new();
    file.take(max_bytes)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    let length = bytes.len() as u64;
    Ok((
        bytes,
        FileRead {
            more: offset + length < info.size,
            path: info.path,
            mime: info.mime,
            size: info.size,
            offset,
            length,
        },
    ))
}

/// Runs file work, which blocks, on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ServiceError::internal("A file operation failed", &e))?
}

fn text_result(text: String) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(text)])
}

fn structured(value: &impl serde::Serialize) -> Result<CallToolResult, ServiceError> {
    Ok(CallToolResult::structured(to_json(value)?))
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for SandcellMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new("sandcell", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
    }

    /// Negotiates as the SDK does; over HTTP the user of this first request owns the
    /// connection from now on.
    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        self.user(&context)
            .map_err(|error| protocol_error(error, None))?;
        context.peer.set_peer_info(request.clone());
        self.negotiate_initialize(&request)
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(&PROTOCOL_VERSIONS)
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(
                "sandcell://sessions/{session_id}/files/{path}",
                "session-file",
            )
            .with_title("A file in a session's /mnt/data")
            .with_description("The bytes of a file in /mnt/data of one of your sessions."),
        ]))
    }

    /// The files of the caller's sessions, a page at a time: a page ends after the
    /// session whose files reach [`MAX_LISTED_RESOURCES`], and its cursor is that
    /// session's id (the core's list cursor), so the next page starts at the next session.
    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let listed = async {
            let user = self.user(&context)?;
            let page = PageRequest {
                limit: None,
                after: request.and_then(|request| request.cursor),
            };
            let sessions = self.service.sessions.list(&user, &page).await?;
            let count = sessions.data.len();
            let mut resources = Vec::new();
            let mut next = sessions.next;
            for (index, session) in sessions.data.into_iter().enumerate() {
                let workdir = self.service.sessions.workdir(&user, &session.id).await?;
                let files = blocking(move || Ok(workdir.list()?)).await?;
                resources.extend(files.into_iter().map(|file| {
                    Resource::new(file_uri(&session.id, &file.path), file.path)
                        .with_mime_type(file.mime)
                        .with_size(file.size)
                }));
                if resources.len() >= MAX_LISTED_RESOURCES && index + 1 < count {
                    next = Some(session.id);
                    break;
                }
            }
            Ok::<_, ServiceError>((resources, next))
        };
        listed
            .await
            .map(|(resources, next)| {
                let mut result = ListResourcesResult::with_all_items(resources);
                result.next_cursor = next;
                result
            })
            .map_err(|error| resource_error(error, "sandcell://sessions/"))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri;
        let read = async {
            let user = self.user(&context)?;
            let (session_id, path) = parse_file_uri(&uri)?;
            let workdir = self.service.sessions.workdir(&user, &session_id).await?;
            let (bytes, read) =
                blocking(move || read_part(&workdir, &path, 0, MAX_READ_BYTES)).await?;
            if read.more {
                return Err(ServiceError::invalid(format!(
                    "{MOUNT}/{} is {} bytes, more than a resource read returns ({MAX_READ_BYTES}); read it in parts with the read_file tool.",
                    read.path, read.size
                )));
            }
            Ok(file_contents(uri.clone(), &read.mime, bytes))
        };
        match read.await {
            Ok(contents) => Ok(ReadResourceResult::new(vec![contents]).into()),
            Err(error) => Err(resource_error(error, &uri)),
        }
    }
}
