//! Which models conversations talk to: the server's default, and the providers of
//! sandcell's config file (with the usual environment variables for keys and addresses).

use crate::error::{sentence, ServiceError};
use sandcell_agent::{Config, ModelChoice, ModelClient};
use serde::Serialize;
use utoipa::ToSchema;

/// How to configure a model, for a server that has none.
pub const MODEL_HINT: &str = "Start sandcell serve with SANDCELL_MODEL=PROVIDER:MODEL in its environment (for example openai:gpt-4.1 with OPENAI_API_KEY set, anthropic:claude-sonnet-4-5 with ANTHROPIC_API_KEY set, or ollama:qwen2.5-coder:7b), or set model = \"PROVIDER:MODEL\" in sandcell's config file.";

/// The models a server offers.
#[derive(Debug, Clone, Default)]
pub struct Models {
    /// Providers, keys and the step limit, from the config file.
    pub config: Config,
    /// `provider:model` for a conversation that names none.
    pub default: Option<String>,
}

/// What `GET /models` says.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelsInfo {
    /// `provider:model` a new conversation talks to unless it names another; null when
    /// none is configured.
    pub default: Option<String>,
    /// The providers of the config file (besides the built-in openai,
    /// openai-responses, anthropic, ollama and openai-compatible).
    pub providers: Vec<String>,
    /// How to configure a model.
    pub hint: &'static str,
}

impl Models {
    pub fn info(&self) -> ModelsInfo {
        ModelsInfo {
            default: self.default.clone(),
            providers: self.config.providers.keys().cloned().collect(),
            hint: MODEL_HINT,
        }
    }

    /// The model asked for, else the default; 422 when there is neither.
    pub fn pick(&self, requested: Option<&str>) -> Result<String, ServiceError> {
        requested
            .map(str::trim)
            .filter(|spec| !spec.is_empty())
            .map(str::to_owned)
            .or_else(|| self.default.clone())
            .ok_or_else(|| ServiceError::invalid(format!("No model is configured. {MODEL_HINT}")))
    }

    /// A client for `spec`; 422 when it cannot be resolved (an unknown provider, a
    /// missing key).
    pub fn client(&self, spec: &str) -> Result<ModelClient, ServiceError> {
        let env = |name: &str| std::env::var(name).ok();
        ModelChoice::resolve(spec, None, &self.config, &env)
            .and_then(ModelClient::new)
            .map_err(|error| ServiceError::invalid(sentence(&error.to_string())))
    }

    /// Model requests per turn at most.
    pub fn max_steps(&self) -> usize {
        self.config.max_steps.unwrap_or(20).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_is_the_one_asked_for_else_the_default_else_an_error_saying_how() {
        let mut models = Models::default();
        let none = models.pick(None).unwrap_err();
        assert!(none.to_string().contains("SANDCELL_MODEL"), "{none}");
        assert_eq!(models.pick(Some("ollama:x")).unwrap(), "ollama:x");
        models.default = Some("anthropic:y".into());
        assert_eq!(models.pick(Some("  ")).unwrap(), "anthropic:y");
        assert_eq!(models.pick(None).unwrap(), "anthropic:y");
        let unknown = models.client("nowhere:model").unwrap_err();
        assert!(unknown.to_string().ends_with('.'), "{unknown}");
        assert!(models.client("ollama:qwen").is_ok());
    }
}
