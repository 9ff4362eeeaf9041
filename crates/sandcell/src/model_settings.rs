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
}
