//! A conversation as a Jupyter notebook (nbformat 4.5): the words as Markdown cells, the
//! code as code cells with their outputs, images included.

use serde_json::{json, Value};

use crate::transcript::Record;

/// The notebook of a conversation.
pub fn to_notebook(records: &[Record]) -> Value {
    let mut cells = Vec::new();
    let mut execution_count = 0;
    for record in records {
        let cell = match record {
            Record::User { text } => markdown(format!("**User:**\n\n{text}")),
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
                for (name, text) in [("stdout", &execution.stdout), ("stderr", &execution.stderr)] {
                    if !text.is_empty() {
                        outputs.push(json!({"output_type": "stream", "name": name, "text": text}));
                    }
                }
                outputs.extend(execution.results.iter().map(
                    |bundle| json!({"output_type": "display_data", "data": bundle, "metadata": {}}),
                ));
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

fn code_cell(code: &str, execution_count: usize, outputs: Vec<Value>) -> Value {
    json!({
        "cell_type": "code",
        "execution_count": execution_count,
        "metadata": {},
        "source": code,
        "outputs": outputs,
    })
}

fn markdown(source: String) -> Value {
    json!({"cell_type": "markdown", "metadata": {}, "source": source})
}
