//! OpenAI's lists: `?after=ID&limit=N&order=asc|desc`, answered as `{"object": "list",
//! "data", "first_id", "last_id", "has_more"}`; the paging itself is the core's `Page`.

use sandcell_service::{Page, PageRequest};
use serde::{Deserialize, Serialize};

/// OpenAI's default page size.
const DEFAULT_LIMIT: usize = 20;

/// Which page of a list.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// The id of the last object of the previous page.
    pub after: Option<String>,
    pub limit: Option<usize>,
    pub order: Option<Order>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    Asc,
    #[default]
    Desc,
}

impl ListQuery {
    pub fn newest_first(&self) -> bool {
        self.order.unwrap_or_default() == Order::Desc
    }

    pub fn page(&self) -> PageRequest {
        PageRequest {
            limit: Some(self.limit.unwrap_or(DEFAULT_LIMIT)),
            after: self.after.clone(),
        }
    }
}

/// A list object.
#[derive(Debug, Serialize)]
pub struct List<T> {
    object: &'static str,
    data: Vec<T>,
    /// The published schema requires a string: an empty list has "".
    first_id: String,
    last_id: String,
    has_more: bool,
}

impl<T> List<T> {
    /// The page's items as OpenAI's objects; `id` is an object's id.
    pub fn of<I>(page: Page<I>, id: impl Fn(&I) -> &str, object: impl Fn(I) -> T) -> Self {
        let first_id = page.data.first().map(&id).unwrap_or_default().to_owned();
        let last_id = page.data.last().map(&id).unwrap_or_default().to_owned();
        Self {
            object: "list",
            has_more: page.next.is_some(),
            data: page.data.into_iter().map(object).collect(),
            first_id,
            last_id,
        }
    }
}

/// What deleting an object answers.
#[derive(Debug, Serialize)]
pub struct Deleted {
    pub id: String,
    pub object: &'static str,
    pub deleted: bool,
}
