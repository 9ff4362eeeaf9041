//! A conversation as a Jupyter notebook (nbformat 4.5): the words as Markdown cells, the
//! code as code cells with their execution counts and outputs as Jupyter writes them (the
//! last expression's value an `execute_result`, `display()` outputs `display_data`),
//! images included.

use sandcell_session::MimeBundle;
use serde_json::{json, Value};

use crate::transcript::Record;

/// The notebook of a conversation.
pub fn to_notebook(records: &[Record]) -> Value {
    let mut cells = Vec::new();
    let mut execution_count: u64 = 0;
    for record in records {
        let cell = match record {
            Record::User { text, .. } => markdown(format!("**User:**\n\n{text}")),
            Record::Assistant { text, .. } if !text.trim().is_empty() => {
                markdown(format!("**Assistant:**\n\n{text}"))
            }
            Record::Tool {
                code, execution, ..
            } => {
                execution_count += 1;
                let mut outputs = Vec::new();
                let Some(execution) = execution else {
                    cells.push(code_cell(code, execution_count, outputs));
                    continue;
                };
                // The kernel's own count, as the cell's tracebacks name it (`Cell In[N]`).
                if let Some(count) = execution.execution_count {
                    execution_count = count;
                }
                for (name, text) in [("stdout", &execution.stdout), ("stderr", &execution.stderr)] {
                    if !text.is_empty() {
                        outputs.push(json!({"output_type": "stream", "name": name, "text": text}));
                    }
                }
                outputs.extend(execution.results.iter().enumerate().map(|(index, bundle)| {
                    result_output(
                        bundle,
                        (execution.execute_result == Some(index)).then_some(execution_count),
                    )
                }));
                if let Some(error) = &execution.error {
                    outputs.push(json!({
                        "output_type": "error",
                        "ename": error.ename,
                        "evalue": error.evalue,
                        "traceback": error.traceback,
                    }));
                }
                code_cell(code, execution_count, outputs)
            }
            Record::Start { .. } | Record::Assistant { .. } | Record::Note { .. } => continue,
        };
        cells.push(cell);
    }
    for (index, cell) in cells.iter_mut().enumerate() {
        cell["id"] = json!(format!("cell-{}", index + 1));
    }
    notebook_document(cells)
}

/// An nbformat 4.5 notebook of a Python 3 kernel holding `cells`.
pub fn notebook_document(cells: Vec<Value>) -> Value {
    json!({
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
        "cells": cells,
    })
}

fn code_cell(code: &str, execution_count: u64, outputs: Vec<Value>) -> Value {
    json!({
        "cell_type": "code",
        "execution_count": execution_count,
        "metadata": {},
        "source": code,
        "outputs": outputs,
    })
}

/// A result as Jupyter writes it: the last expression's value (with the cell's
/// `execution_count`) as `execute_result`, any other as `display_data`.
fn result_output(bundle: &MimeBundle, value_of_cell: Option<u64>) -> Value {
    match value_of_cell {
        Some(execution_count) => json!({
            "output_type": "execute_result",
            "execution_count": execution_count,
            "data": bundle,
            "metadata": {},
        }),
        None => json!({"output_type": "display_data", "data": bundle, "metadata": {}}),
    }
}

fn markdown(source: String) -> Value {
    json!({"cell_type": "markdown", "metadata": {}, "source": source})
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandcell_session::{Execution, Status};

    fn bundle(text: &str) -> MimeBundle {
        json!({"text/plain": text}).as_object().cloned().unwrap()
    }

    fn tool(code: &str, results: Vec<MimeBundle>, execute_result: Option<usize>) -> Record {
        Record::Tool {
            call_id: code.into(),
            code: code.into(),
            content: String::new(),
            execution: Some(Box::new(Execution {
                status: Status::Ok,
                stdout: String::new(),
                stderr: String::new(),
                results,
                execute_result,
                execution_count: None,
                error: None,
                files: Vec::new(),
                duration_ms: 1,
                restarted: false,
                truncated: false,
                network: Default::default(),
            })),
            images: Vec::new(),
        }
    }

    #[test]
    fn the_value_of_a_cell_is_an_execute_result_with_its_count() {
        let records = [
            tool("display(1)", vec![bundle("1")], None),
            tool("display(2)\n3", vec![bundle("2"), bundle("3")], Some(1)),
        ];
        let notebook = to_notebook(&records);
        let cells = notebook["cells"].as_array().unwrap();
        assert_eq!(cells[0]["execution_count"], 1);
        assert_eq!(cells[0]["outputs"][0]["output_type"], "display_data");
        assert!(cells[0]["outputs"][0].get("execution_count").is_none());
        assert_eq!(cells[1]["execution_count"], 2);
        let outputs = cells[1]["outputs"].as_array().unwrap();
        assert_eq!(outputs[0]["output_type"], "display_data");
        assert_eq!(outputs[0]["data"]["text/plain"], "2");
        assert_eq!(outputs[1]["output_type"], "execute_result");
        assert_eq!(outputs[1]["execution_count"], 2);
        assert_eq!(outputs[1]["data"]["text/plain"], "3");
        assert_eq!(outputs[1]["metadata"], json!({}));
    }
}
