//! One envelope for every list: `{"data": [...], "next": CURSOR | null}`, with cursor
//! pagination. The cursor is the id of the last item given; the next page starts after
//! it, so a client pages through by passing `next` back as `after`.

use crate::error::ServiceError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Items per page unless asked otherwise, and at most.
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;

/// Which page of a list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageRequest {
    /// Items in this page: 1 to 1000 (default 100).
    pub limit: Option<usize>,
    /// Start after the item with this cursor (the `next` of the previous page).
    pub after: Option<String>,
}

/// A page of a list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<String>,
}

impl PageRequest {
    /// The page of `items` (in their list order) this request asks for; `key` is an
    /// item's cursor. A cursor that names no item is an error, not an empty page.
    pub fn page<T>(
        &self,
        items: Vec<T>,
        key: impl Fn(&T) -> &str,
    ) -> Result<Page<T>, ServiceError> {
        let limit = self.limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ServiceError::invalid(format!(
                "limit must be between 1 and {MAX_PAGE}, not {limit}."
            )));
        }
        let start = match &self.after {
            None => 0,
            Some(after) => {
                items
                    .iter()
                    .position(|item| key(item) == after)
                    .ok_or_else(|| {
                        ServiceError::invalid(format!(
                            "The cursor {after} is not in this list (the item was deleted?); start again without `after`."
                        ))
                    })?
                    + 1
            }
        };
        let mut data: Vec<T> = items.into_iter().skip(start).collect();
        let more = data.len() > limit;
        data.truncate(limit);
        let next = if more {
            data.last().map(|item| key(item).to_owned())
        } else {
            None
        };
        Ok(Page { data, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("id{i}")).collect()
    }

    #[test]
    fn pages_follow_each_other_to_the_end() {
        let request = PageRequest {
            limit: Some(2),
            after: None,
        };
        let first = request.page(ids(5), String::as_str).unwrap();
        assert_eq!(first.data, ["id0", "id1"]);
        assert_eq!(first.next.as_deref(), Some("id1"));
        let second = PageRequest {
            limit: Some(2),
            after: first.next,
        }
        .page(ids(5), String::as_str)
        .unwrap();
        assert_eq!(second.data, ["id2", "id3"]);
        let last = PageRequest {
            limit: Some(2),
            after: second.next,
        }
        .page(ids(5), String::as_str)
        .unwrap();
        assert_eq!(last.data, ["id4"]);
        assert_eq!(last.next, None);
    }

    #[test]
    fn a_full_last_page_has_no_next() {
        let page = PageRequest {
            limit: Some(3),
            after: None,
        }
        .page(ids(3), String::as_str)
        .unwrap();
        assert_eq!(page.data.len(), 3);
        assert_eq!(page.next, None);
    }

    #[test]
    fn bad_limits_and_unknown_cursors_are_refused() {
        for limit in [0, MAX_PAGE + 1] {
            let request = PageRequest {
                limit: Some(limit),
                after: None,
            };
            assert!(matches!(
                request.page(ids(3), String::as_str),
                Err(ServiceError::Invalid(_))
            ));
        }
        let request = PageRequest {
            limit: None,
            after: Some("gone".into()),
        };
        let error = request.page(ids(3), String::as_str).unwrap_err();
        assert!(error.to_string().contains("gone"), "{error}");
    }
}
