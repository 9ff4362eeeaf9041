//! Which model `sandcell chat` and `sandcell serve` talk to unless told otherwise, and
//! the config file that says how to reach it.

use sandcell_agent::Config;
use std::path::PathBuf;

/// The config file and the model to talk to unless told otherwise.
pub struct ModelSettings {
    pub config: Config,
    pub config_path: Option<PathBuf>,
    /// `flag`, else $SANDCELL_MODEL, else `model` in the config file.
    pub model: Option<String>,
}

impl ModelSettings {
    pub fn load(flag: Option<&str>) -> anyhow::Result<Self> {
        let config_path = Config::default_path();
        let config = match &config_path {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        let model = flag
            .map(str::to_owned)
            .or_else(|| {
                std::env::var("SANDCELL_MODEL")
                    .ok()
                    .filter(|m| !m.is_empty())
            })
            .or_else(|| config.model.clone());
        Ok(Self {
            config,
            config_path,
            model,
        })
    }

    /// Sends the default model's requests to `base_url` (`sandcell serve --base-url`):
    /// its provider's address, ahead of the config file's and the environment's.
    pub fn set_base_url(&mut self, base_url: &str) -> anyhow::Result<()> {
        let Some(provider) = self
            .model
            .as_deref()
            .and_then(|model| model.split_once(':'))
            .map(|(provider, _)| provider.to_owned())
        else {
            anyhow::bail!(
                "--base-url is the address of the default model's provider, and no model is configured: add --model PROVIDER:MODEL (for example openai-compatible:qwen2.5-coder)."
            );
        };
        self.config.providers.entry(provider).or_default().base_url = Some(base_url.to_owned());
        Ok(())
    }
}
