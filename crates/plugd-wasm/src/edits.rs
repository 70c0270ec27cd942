//! Contract 0.2's `edit`s: the changes a hook or a middleware returns with its result, applied to
//! the exchange in order, each with the checks of the matching setter.

use plugd_core::{Exchange, HostError, MAX_ERROR_BYTES, PluginError, clean_text};

use crate::bindings::v0_2::types::Edit;
use crate::limits::response_too_large;

/// Apply `edits` to `ex` in order. A `set-local` past the locals caps is dropped (the exchange
/// audits it, as it does for `exchange.set-local`); any other refused edit stops there and is the
/// call's error, naming the edit (audited by the exchange, whatever the reason).
pub(crate) fn apply(
    ex: &mut Exchange,
    edits: Vec<Edit>,
    plugin: &str,
    max_response_bytes: usize,
    what: &dyn std::fmt::Display,
) -> Result<(), PluginError> {
    for (i, edit) in edits.into_iter().enumerate() {
        let refused = |edit: &str, name: &str, e: HostError| {
            let edit = match name {
                "" => edit.to_string(),
                name => format!("{edit} {}", clean_text(name, 128)),
            };
            PluginError::Failed(clean_text(
                &format!("{what}: edit {i} ({edit}) was refused: {e}"),
                MAX_ERROR_BYTES,
            ))
        };
        match edit {
            Edit::SetLocal((key, value)) => {
                let _ = ex.set_local(&key, &value);
            }
            Edit::SetHeader((name, value)) => ex
                .apply_edit(|ex| ex.set_header(&name, &value))
                .map_err(|e| refused("set-header", &name, e))?,
            Edit::RemoveHeader(name) => ex
                .apply_edit(|ex| ex.remove_header(&name))
                .map_err(|e| refused("remove-header", &name, e))?,
            Edit::SetStatus(status) => ex
                .apply_edit(|ex| ex.set_status(status))
                .map_err(|e| refused("set-status", &status.to_string(), e))?,
            Edit::SetResponseHeader((name, value)) => ex
                .apply_edit(|ex| ex.set_response_header(&name, &value))
                .map_err(|e| refused("set-response-header", &name, e))?,
            Edit::RemoveResponseHeader(name) => ex
                .apply_edit(|ex| ex.remove_response_header(&name))
                .map_err(|e| refused("remove-response-header", &name, e))?,
            Edit::SetResponseBody(body) => {
                if body.len() > max_response_bytes {
                    let m = response_too_large(
                        plugin,
                        body.len(),
                        max_response_bytes,
                        "edit set-response-body",
                    );
                    return Err(refused("set-response-body", "", HostError::Invalid(m)));
                }
                ex.apply_edit(|ex| ex.set_response_body(body))
                    .map_err(|e| refused("set-response-body", "", e))?
            }
        }
    }
    Ok(())
}
