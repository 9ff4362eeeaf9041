//! Notebooks: cells a person writes and runs in a session, saved as they work.
//!
//! A notebook lives in the database: its title, its cells (each with its source, its
//! outputs in Jupyter's shape and its execution count) and the session its cells run in.
//! A page saves it whole on every change; it is owned by one user (another user's is
//! "not found"), exported as an `.ipynb` Jupyter opens unchanged, and made from an
//! uploaded `.ipynb`. The session may go (deleted, or cleaned away) while the notebook
//! stays: the notebook then has none, and a client makes a new one.

use crate::error::ServiceError;
use crate::page::{Page, PageRequest};
use crate::sessions::Sessions;
use crate::store::{self, NotebookRecord, NotebookSave, Store, User};
use crate::users::random_hex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use utoipa::ToSchema;

/// The longest title, in characters.
const MAX_TITLE_CHARS: usize = 200;
/// The most cells a notebook has.
const MAX_CELLS: usize = 10_000;
/// The title of a notebook made without one.
const UNTITLED: &str = "Untitled notebook";

/// What the API shows of a notebook in a list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NotebookInfo {
    pub id: String,
    pub title: String,
    /// The session its cells run in; null when it has none (any more).
    pub session_id: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// When it was last saved, RFC 3339, UTC.
    pub updated_at: String,
    /// How many times it was saved: a save that names the revision it changes is refused
    /// when another save came first.
    #[schema(minimum = 0)]
    pub revision: u64,
}

/// A notebook with its cells.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotebookDetail {
    #[serde(flatten)]
    pub info: NotebookInfo,
    pub cells: Vec<NotebookCell>,
}

/// A cell's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CellType {
    Code,
    Markdown,
}

/// One cell.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotebookCell {
    pub cell_type: CellType,
    #[serde(default)]
    pub source: String,
    /// The `In [N]` of its last run; null when it has not run.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub execution_count: Option<u64>,
    /// Its outputs as Jupyter writes them (nbformat 4): objects with an `output_type` of
    /// `stream`, `display_data`, `execute_result` or `error`.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub outputs: Vec<Map<String, Value>>,
    /// The execution of its last run, while it may still be running: a client that
    /// opens the notebook then follows it.
    #[serde(default)]
    pub execution_id: Option<String>,
}

/// What a save changes; what is left out stays.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotebookChange {
    pub title: Option<String>,
    /// A session of yours for its cells to run in.
    pub session_id: Option<String>,
    /// Every cell, in order (they replace the saved ones).
    pub cells: Option<Vec<NotebookCell>>,
    /// The revision this save changes (the `revision` the client last read or saved):
    /// when the notebook was saved since (in another tab, say), the save is refused
    /// with 409 and nothing is written. Without it, the save is written whatever came before.
    #[schema(minimum = 0)]
    pub revision: Option<u64>,
}

/// All notebooks of the server.
pub struct Notebooks {
    store: Store,
    sessions: Arc<Sessions>,
}

impl Notebooks {
    pub fn new(store: Store, sessions: Arc<Sessions>) -> Self {
        Self { store, sessions }
    }

    /// A new notebook of the user's, with what `change` gives.
    pub async fn create(
        &self,
        user: &User,
        change: NotebookChange,
    ) -> Result<NotebookDetail, ServiceError> {
        let id = random_hex(16).map_err(|e| ServiceError::internal("No random notebook id", &e))?;
        let now = store::now();
        let mut record = NotebookRecord {
            id,
            user_id: user.id,
            title: UNTITLED.to_owned(),
            session_id: None,
            cells: "[]".to_owned(),
            created_at: now.clone(),
            updated_at: now,
            revision: 0,
        };
        self.apply(user, &mut record, change)?;
        self.store
            .insert_notebook(record.clone())
            .await
            .map_err(|e| ServiceError::internal("The notebook cannot be saved", &e))?;
        self.detail(user, record)
    }

    /// A page of the user's notebooks, the most recently saved first.
    pub async fn list(
        &self,
        user: &User,
        page: &PageRequest,
    ) -> Result<Page<NotebookInfo>, ServiceError> {
        let notebooks = self
            .store
            .notebooks(user.id)
            .await
            .map_err(|e| ServiceError::internal("The notebooks cannot be read", &e))?;
        page.page(
            notebooks
                .into_iter()
                .map(|record| self.info(user, record))
                .collect(),
            |notebook| &notebook.id,
        )
    }

    pub async fn get(&self, user: &User, id: &str) -> Result<NotebookDetail, ServiceError> {
        let record = self.find(user, id).await?;
        self.detail(user, record)
    }

    /// Saves what `change` gives.
    pub async fn update(
        &self,
        user: &User,
        id: &str,
        change: NotebookChange,
    ) -> Result<NotebookInfo, ServiceError> {
        let mut record = self.find(user, id).await?;
        let expected = change.revision;
        self.apply(user, &mut record, change)?;
        record.updated_at = store::now();
        let saved = self
            .store
            .update_notebook(record.clone(), expected)
            .await
            .map_err(|e| ServiceError::internal("The notebook cannot be saved", &e))?;
        match saved {
            NotebookSave::Saved(revision) => record.revision = revision,
            NotebookSave::Stale => {
                return Err(ServiceError::Conflict(format!(
                    "Notebook {id} was saved elsewhere (another tab or client) after revision {}; read it again and make the change on what is there now.",
                    expected.unwrap_or_default()
                )))
            }
            NotebookSave::NotFound => return Err(ServiceError::not_found(format!("notebook {id}"))),
        }
        Ok(self.info(user, record))
    }

    /// Deletes the notebook, with its session and the session's files (unless the
    /// session is a conversation's, which keeps it).
    pub async fn delete(&self, user: &User, id: &str) -> Result<(), ServiceError> {
        let record = self.find(user, id).await?;
        if let Some(session) = self.live_session(user, record.session_id.as_deref()) {
            match self.sessions.delete(user, &session).await {
                Ok(()) | Err(ServiceError::NotFound(_) | ServiceError::Conflict(_)) => {}
                Err(error) => return Err(error),
            }
        }
        self.store
            .delete_notebook(user.id, id)
            .await
            .map_err(|e| ServiceError::internal("The notebook cannot be deleted", &e))?;
        Ok(())
    }

    /// The notebook as Jupyter writes it (nbformat 4.5), and its title.
    pub async fn to_ipynb(&self, user: &User, id: &str) -> Result<(String, Value), ServiceError> {
        let record = self.find(user, id).await?;
        let cells = cells_of(&record)?;
        Ok((record.title, ipynb(&cells)))
    }

    /// A new notebook from an `.ipynb` file (nbformat 4) named `name`.
    pub async fn import(
        &self,
        user: &User,
        name: Option<&str>,
        notebook: &Value,
    ) -> Result<NotebookDetail, ServiceError> {
        let cells = from_ipynb(notebook)?;
        let title = name
            .map(|name| name.trim().trim_end_matches(".ipynb").trim())
            .filter(|title| !title.is_empty())
            .map(str::to_owned);
        self.create(
            user,
            NotebookChange {
                title,
                session_id: None,
                cells: Some(cells),
                revision: None,
            },
        )
        .await
    }

    async fn find(&self, user: &User, id: &str) -> Result<NotebookRecord, ServiceError> {
        self.store
            .notebook(user.id, id)
            .await
            .map_err(|e| ServiceError::internal("The notebook cannot be read", &e))?
            .ok_or_else(|| ServiceError::not_found(format!("notebook {id}")))
    }

    /// Checks `change` and writes it into `record`.
    fn apply(
        &self,
        user: &User,
        record: &mut NotebookRecord,
        change: NotebookChange,
    ) -> Result<(), ServiceError> {
        if let Some(title) = change.title {
            let title = title.trim();
            if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
                return Err(ServiceError::invalid(format!(
                    "A notebook's title has 1 to {MAX_TITLE_CHARS} characters."
                )));
            }
            record.title = title.to_owned();
        }
        if let Some(session) = change.session_id {
            // Only a session of the user's: another's is "not found".
            self.sessions.get(user, &session)?;
            record.session_id = Some(session);
        }
        if let Some(cells) = change.cells {
            check_cells(&cells)?;
            record.cells = serde_json::to_string(&cells)
                .map_err(|e| ServiceError::internal("The cells cannot be written", &e))?;
        }
        Ok(())
    }

    fn detail(&self, user: &User, record: NotebookRecord) -> Result<NotebookDetail, ServiceError> {
        let cells = cells_of(&record)?;
        Ok(NotebookDetail {
            info: self.info(user, record),
            cells,
        })
    }

    fn info(&self, user: &User, record: NotebookRecord) -> NotebookInfo {
        NotebookInfo {
            session_id: self.live_session(user, record.session_id.as_deref()),
            id: record.id,
            title: record.title,
            created_at: record.created_at,
            updated_at: record.updated_at,
            revision: record.revision,
        }
    }

    /// `session` if it still exists.
    fn live_session(&self, user: &User, session: Option<&str>) -> Option<String> {
        session
            .filter(|id| self.sessions.get(user, id).is_ok())
            .map(str::to_owned)
    }
}

fn cells_of(record: &NotebookRecord) -> Result<Vec<NotebookCell>, ServiceError> {
    serde_json::from_str(&record.cells)
        .map_err(|e| ServiceError::internal("The saved cells cannot be read", &e))
}

const OUTPUT_TYPES: [&str; 4] = ["stream", "display_data", "execute_result", "error"];

fn check_cells(cells: &[NotebookCell]) -> Result<(), ServiceError> {
    if cells.len() > MAX_CELLS {
        return Err(ServiceError::invalid(format!(
            "A notebook has at most {MAX_CELLS} cells."
        )));
    }
    for (index, cell) in cells.iter().enumerate() {
        for output in &cell.outputs {
            let kind = output.get("output_type").and_then(Value::as_str);
            if !kind.is_some_and(|kind| OUTPUT_TYPES.contains(&kind)) {
                return Err(ServiceError::invalid(format!(
                    "Cell {} has an output whose output_type is not one of {}.",
                    index + 1,
                    OUTPUT_TYPES.join(", ")
                )));
            }
        }
    }
    Ok(())
}

/// The notebook as nbformat 4.5.
fn ipynb(cells: &[NotebookCell]) -> Value {
    let cells: Vec<Value> = cells
        .iter()
        .enumerate()
        .map(|(index, cell)| {
            let id = format!("cell-{}", index + 1);
            match cell.cell_type {
                CellType::Markdown => json!({
                    "id": id, "cell_type": "markdown", "metadata": {}, "source": cell.source,
                }),
                CellType::Code => json!({
                    "id": id,
                    "cell_type": "code",
                    "metadata": {},
                    "source": cell.source,
                    "execution_count": cell.execution_count,
                    "outputs": cell
                        .outputs
                        .iter()
                        .map(|output| jupyter_output(output, cell.execution_count))
                        .collect::<Vec<_>>(),
                }),
            }
        })
        .collect();
    sandcell_agent::notebook::notebook_document(cells)
}

/// An output with exactly the keys nbformat's schema has for its type.
fn jupyter_output(output: &Map<String, Value>, execution_count: Option<u64>) -> Value {
    let field = |name: &str| output.get(name).cloned();
    let text = |name: &str| field(name).unwrap_or_else(|| json!(""));
    let data = || {
        field("data")
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}))
    };
    let metadata = || {
        field("metadata")
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}))
    };
    match output.get("output_type").and_then(Value::as_str) {
        Some("stream") => {
            let name = match output.get("name").and_then(Value::as_str) {
                Some("stderr") => "stderr",
                _ => "stdout",
            };
            json!({"output_type": "stream", "name": name, "text": text("text")})
        }
        Some("execute_result") => json!({
            "output_type": "execute_result",
            "execution_count": field("execution_count")
                .filter(Value::is_u64)
                .unwrap_or_else(|| json!(execution_count)),
            "data": data(),
            "metadata": metadata(),
        }),
        Some("error") => json!({
            "output_type": "error",
            "ename": text("ename"),
            "evalue": text("evalue"),
            "traceback": field("traceback").filter(Value::is_array).unwrap_or_else(|| json!([])),
        }),
        _ => json!({"output_type": "display_data", "data": data(), "metadata": metadata()}),
    }
}

/// The cells of an nbformat 4 notebook: code and Markdown cells (raw cells are left
/// out), with multi-line strings joined as the page shows them.
fn from_ipynb(notebook: &Value) -> Result<Vec<NotebookCell>, ServiceError> {
    let version = notebook.get("nbformat").and_then(Value::as_u64);
    if version != Some(4) {
        return Err(ServiceError::invalid(
            "This is not a Jupyter notebook of format 4 (nbformat 4); save it with a current Jupyter and open it again.",
        ));
    }
    let Some(cells) = notebook.get("cells").and_then(Value::as_array) else {
        return Err(ServiceError::invalid("The notebook has no list of cells."));
    };
    let mut imported = Vec::new();
    for (index, cell) in cells.iter().enumerate() {
        let invalid = |what: &str| {
            ServiceError::invalid(format!("Cell {} of the notebook {what}.", index + 1))
        };
        let cell_type = match cell.get("cell_type").and_then(Value::as_str) {
            Some("code") => CellType::Code,
            Some("markdown") => CellType::Markdown,
            Some("raw") => continue,
            _ => return Err(invalid("has no cell_type of code, markdown or raw")),
        };
        let source = multiline(cell.get("source").unwrap_or(&Value::Null))
            .ok_or_else(|| invalid("has a source that is not text"))?;
        let outputs = match cell.get("outputs") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(outputs)) => outputs
                .iter()
                .map(|output| output.as_object().map(joined_output))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| invalid("has an output that is not an object"))?,
            Some(_) => return Err(invalid("has outputs that are not a list")),
        };
        imported.push(NotebookCell {
            cell_type,
            source,
            execution_count: cell.get("execution_count").and_then(Value::as_u64),
            outputs,
            execution_id: None,
        });
    }
    check_cells(&imported)?;
    Ok(imported)
}

/// Jupyter's multi-line string: a string, or a list of strings to join.
fn multiline(value: &Value) -> Option<String> {
    match value {
        Value::Null => Some(String::new()),
        Value::String(text) => Some(text.clone()),
        Value::Array(lines) => lines
            .iter()
            .map(|line| line.as_str())
            .collect::<Option<Vec<_>>>()
            .map(|lines| lines.concat()),
        _ => None,
    }
}

/// An output with its multi-line strings joined (stream text, text MIME data).
fn joined_output(output: &Map<String, Value>) -> Map<String, Value> {
    let mut output = output.clone();
    if let Some(text) = output.get("text").and_then(multiline) {
        output.insert("text".into(), Value::String(text));
    }
    if let Some(Value::Object(data)) = output.get_mut("data") {
        for (mime, value) in data.iter_mut() {
            let json_data = mime == "application/json" || mime.ends_with("+json");
            if json_data || !value.is_array() {
                continue;
            }
            if let Some(text) = multiline(value) {
                *value = Value::String(text);
            }
        }
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipynb_round_trips_with_its_multiline_strings_joined() {
        let notebook = json!({
            "nbformat": 4,
            "nbformat_minor": 4,
            "metadata": {},
            "cells": [
                {"cell_type": "markdown", "metadata": {}, "source": ["# Title\n", "text"]},
                {"cell_type": "raw", "metadata": {}, "source": "raw"},
                {"cell_type": "code", "metadata": {}, "execution_count": 3, "source": ["1 +\n", "1"],
                 "outputs": [
                    {"output_type": "stream", "name": "stdout", "text": ["a\n", "b\n"]},
                    {"output_type": "execute_result", "execution_count": 3, "metadata": {},
                     "data": {"text/plain": ["2"], "application/json": [1, 2]}},
                 ]},
            ],
        });
        let cells = from_ipynb(&notebook).unwrap();
        assert_eq!(cells.len(), 2);
        assert_eq!(cells[0].cell_type, CellType::Markdown);
        assert_eq!(cells[0].source, "# Title\ntext");
        assert_eq!(cells[1].source, "1 +\n1");
        assert_eq!(cells[1].execution_count, Some(3));
        assert_eq!(cells[1].outputs[0]["text"], "a\nb\n");
        assert_eq!(cells[1].outputs[1]["data"]["text/plain"], "2");
        assert_eq!(
            cells[1].outputs[1]["data"]["application/json"],
            json!([1, 2])
        );

        let exported = ipynb(&cells);
        assert_eq!(exported["cells"][1]["id"], "cell-2");
        assert_eq!(exported["cells"][1]["outputs"][1]["execution_count"], 3);
        assert_eq!(from_ipynb(&exported).unwrap().len(), 2);
    }

    #[test]
    fn what_is_not_a_notebook_is_refused_with_a_sentence() {
        for (notebook, expected) in [
            (json!({"nbformat": 3, "cells": []}), "format 4"),
            (json!({"nbformat": 4}), "no list of cells"),
            (
                json!({"nbformat": 4, "cells": [{"cell_type": "x"}]}),
                "Cell 1",
            ),
            (
                json!({"nbformat": 4, "cells": [{"cell_type": "code", "source": 1}]}),
                "source",
            ),
            (
                json!({"nbformat": 4, "cells": [{"cell_type": "code", "outputs": [{"output_type": "x"}]}]}),
                "output_type",
            ),
        ] {
            let error = from_ipynb(&notebook).unwrap_err();
            assert!(
                matches!(&error, ServiceError::Invalid(m) if m.contains(expected)),
                "{error}"
            );
        }
    }
}
