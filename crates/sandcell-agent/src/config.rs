//! Which model to talk to, and how: `provider:model`, the config file, the usual
//! environment variables.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::AgentError;
use sandcell_llm::Protocol;
use sandcell_pyenv::LayerSpec;

/// How to configure a model, for the error a front end shows when none is.
pub const CONFIG_HINT: &str = "pass --model PROVIDER:MODEL (for example openai:gpt-4.1 with \
OPENAI_API_KEY set, anthropic:claude-sonnet-4-5 with ANTHROPIC_API_KEY set, or \
ollama:qwen2.5-coder:7b), or set model = \"PROVIDER:MODEL\" in the config file";

/// The config file (TOML). Every field is optional.
///
/// ```toml
/// model = "anthropic:claude-sonnet-4-5"   # the default model
/// max_steps = 20                          # code executions per turn
/// allow_net = ["pypi.example.org:443"]    # `sandcell serve`: the most network sessions may ask for
/// pip_index = "https://pypi.example.org/simple/"  # `sandcell serve`: the index of `%pip install`
///
/// [environments.geo]                      # `sandcell setup` and `serve`: an environment sessions may name
/// requirements = ["shapely==2.0.6"]       # pip requirement lines, on top of the base environment
/// preload = ["shapely"]                   # modules its sessions start with imported
///
/// [providers.openai]                      # override a built-in provider
/// api_key = "sk-…"
///
/// [providers.groq]                        # a provider of your own
/// protocol = "openai-chat"                # openai-chat, openai-responses, anthropic, ollama
/// base_url = "https://api.groq.com/openai/v1"
/// api_key_env = "GROQ_API_KEY"
/// vision = false
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub model: Option<String>,
    pub max_steps: Option<usize>,
    /// `sandcell serve`'s network ceiling when `--allow-net` is not given: entries as
    /// `--allow-net` takes them.
    pub allow_net: Option<Vec<String>>,
    /// `sandcell serve`'s package index when `--pip-index` is not given.
    pub pip_index: Option<String>,
    /// Environments sessions may name besides the base one, by name: each is the base
    /// environment plus a package layer that `sandcell setup` (or the first `serve`)
    /// builds.
    #[serde(default)]
    pub environments: BTreeMap<String, LayerSpec>,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
}

/// One `[providers.NAME]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub protocol: Option<ProtocolName>,
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    /// The environment variable holding the key.
    pub api_key_env: Option<String>,
    /// Whether the model reads images (plots are then sent to it as images).
    pub vision: Option<bool>,
}

/// A protocol as the config file names it.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProtocolName {
    OpenaiChat,
    OpenaiResponses,
    Anthropic,
    Ollama,
}

impl From<ProtocolName> for Protocol {
    fn from(name: ProtocolName) -> Self {
        match name {
            ProtocolName::OpenaiChat => Protocol::OpenAiChat,
            ProtocolName::OpenaiResponses => Protocol::OpenAiResponses,
            ProtocolName::Anthropic => Protocol::Anthropic,
            ProtocolName::Ollama => Protocol::Ollama,
        }
    }
}

impl Config {
    /// `SANDCELL_CONFIG`, else `$XDG_CONFIG_HOME/sandcell/config.toml`, else
    /// `~/.config/sandcell/config.toml`.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(path) = non_empty_env("SANDCELL_CONFIG") {
            return Some(PathBuf::from(path));
        }
        let base = non_empty_env("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| non_empty_env("HOME").map(|home| Path::new(&home).join(".config")))?;
        Some(base.join("sandcell").join("config.toml"))
    }

    /// The config file at `path`; a file that does not exist is an empty config.
    pub fn load(path: &Path) -> Result<Config, AgentError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => {
                return Err(AgentError::Config(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        };
        toml::from_str(&text)
            .map_err(|e| AgentError::Config(format!("{} is not valid: {e}", path.display())))
    }
}

/// A provider resolved to what a request needs.
#[derive(Debug, Clone)]
pub struct Provider {
    /// As in `provider:model` (`openai`, `anthropic`, a config table's name).
    pub name: String,
    pub protocol: Protocol,
    /// The base URL as the provider's own SDK takes it (`https://api.openai.com/v1`,
    /// `https://api.anthropic.com`, `http://localhost:11434`).
    pub base_url: String,
    pub api_key: Option<String>,
    /// Where the key comes from, for error messages (`OPENAI_API_KEY`).
    pub key_source: Option<String>,
}

/// A model, ready to be talked to.
#[derive(Debug, Clone)]
pub struct ModelChoice {
    pub provider: Provider,
    pub model: String,
    /// Images (plots) go to the model as images, not only as descriptions.
    pub vision: bool,
}

/// A built-in provider: its protocol, default base URL and key variable.
struct BuiltIn {
    protocol: Protocol,
    base_url_env: Option<&'static str>,
    default_base_url: Option<&'static str>,
    key_env: Option<&'static str>,
    vision: bool,
}

fn built_in(name: &str) -> Option<BuiltIn> {
    let openai = |protocol| BuiltIn {
        protocol,
        base_url_env: Some("OPENAI_BASE_URL"),
        default_base_url: Some("https://api.openai.com/v1"),
        key_env: Some("OPENAI_API_KEY"),
        vision: true,
    };
    Some(match name {
        "openai" => openai(Protocol::OpenAiChat),
        "openai-responses" => openai(Protocol::OpenAiResponses),
        "anthropic" => BuiltIn {
            protocol: Protocol::Anthropic,
            base_url_env: Some("ANTHROPIC_BASE_URL"),
            default_base_url: Some("https://api.anthropic.com"),
            key_env: Some("ANTHROPIC_API_KEY"),
            vision: true,
        },
        "ollama" => BuiltIn {
            protocol: Protocol::Ollama,
            base_url_env: Some("OLLAMA_HOST"),
            default_base_url: Some("http://localhost:11434"),
            key_env: None,
            vision: false,
        },
        // Any server that speaks Chat Completions; its key (if any) only from the
        // config file, so that an OpenAI key never goes to a third party by default.
        "openai-compatible" => BuiltIn {
            protocol: Protocol::OpenAiChat,
            base_url_env: None,
            default_base_url: None,
            key_env: None,
            vision: false,
        },
        _ => return None,
    })
}

/// Substrings of the names of local models that read images.
const VISION_MODEL_MARKERS: &[&str] = &["vision", "llava", "-vl", "vl:", "gemma3", "minicpm-v"];

impl ModelChoice {
    /// Resolves `provider:model`. `base_url` (`--base-url`) overrides every other source.
    /// `env` reads environment variables (a parameter so tests need not set them).
    pub fn resolve(
        spec: &str,
        base_url: Option<&str>,
        config: &Config,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ModelChoice, AgentError> {
        let (name, model) = spec
            .split_once(':')
            .filter(|(name, model)| !name.is_empty() && !model.is_empty())
            .ok_or_else(|| {
                AgentError::Config(format!(
                    "`{spec}` is not PROVIDER:MODEL (for example openai:gpt-4.1, \
                     anthropic:claude-sonnet-4-5, ollama:qwen2.5-coder:7b)"
                ))
            })?;
        let table = config.providers.get(name).cloned().unwrap_or_default();
        let built_in = built_in(name);
        let protocol = match (table.protocol, &built_in) {
            (Some(protocol), _) => protocol.into(),
            (None, Some(built_in)) => built_in.protocol,
            (None, None) => {
                return Err(AgentError::Config(format!(
                    "unknown provider `{name}`: use openai, openai-responses, anthropic, ollama or \
                     openai-compatible, or add a [providers.{name}] table with a protocol and a \
                     base_url to the config file"
                )))
            }
        };
        let env_base_url = built_in
            .as_ref()
            .and_then(|b| b.base_url_env)
            .and_then(|var| env(var).filter(|v| !v.is_empty()));
        let base_url = base_url
            .map(str::to_owned)
            .or(table.base_url)
            .or(env_base_url)
            .or_else(|| {
                built_in
                    .as_ref()
                    .and_then(|b| b.default_base_url)
                    .map(str::to_owned)
            })
            .ok_or_else(|| {
                AgentError::Config(format!(
                    "the provider `{name}` needs a server address: pass --base-url URL or set \
                     base_url under [providers.{name}] in the config file"
                ))
            })?;
        let key_env = table
            .api_key_env
            .clone()
            .or_else(|| built_in.as_ref().and_then(|b| b.key_env).map(str::to_owned));
        let (api_key, key_source) = match (table.api_key, &key_env) {
            (Some(key), _) => (Some(key), Some(format!("api_key under [providers.{name}]"))),
            (None, Some(var)) => (env(var).filter(|v| !v.is_empty()), Some(var.clone())),
            (None, None) => (None, None),
        };
        if api_key.is_none() && built_in.as_ref().is_some_and(|b| b.key_env.is_some()) {
            let var = key_env.unwrap_or_default();
            return Err(AgentError::Config(format!(
                "{var} is not set: export it, or set api_key under [providers.{name}] in the \
                 config file"
            )));
        }
        let vision = table.vision.unwrap_or_else(|| {
            built_in.as_ref().is_some_and(|b| b.vision) || {
                let lower = model.to_lowercase();
                VISION_MODEL_MARKERS.iter().any(|m| lower.contains(m))
            }
        });
        Ok(ModelChoice {
            provider: Provider {
                name: name.to_owned(),
                protocol,
                base_url: with_scheme(&base_url),
                api_key,
                key_source,
            },
            model: model.to_owned(),
            vision,
        })
    }

    /// `provider:model`, as the user wrote it.
    pub fn spec(&self) -> String {
        format!("{}:{}", self.provider.name, self.model)
    }
}

/// `OLLAMA_HOST` is often `host:port` without a scheme.
fn with_scheme(base_url: &str) -> String {
    let trimmed = base_url.trim_end_matches('/');
    if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    }
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_with(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn built_in_providers_take_keys_and_hosts_from_the_usual_variables() {
        let env = env_with(&[("OPENAI_API_KEY", "sk-1"), ("OLLAMA_HOST", "box:11434")]);
        let config = Config::default();
        let openai = ModelChoice::resolve("openai:gpt-4.1", None, &config, &env).unwrap();
        assert_eq!(openai.provider.protocol, Protocol::OpenAiChat);
        assert_eq!(openai.provider.base_url, "https://api.openai.com/v1");
        assert_eq!(openai.provider.api_key.as_deref(), Some("sk-1"));
        assert!(openai.vision);

        let ollama = ModelChoice::resolve("ollama:qwen2.5-coder:7b", None, &config, &env).unwrap();
        assert_eq!(
            ollama.model, "qwen2.5-coder:7b",
            "only the first colon separates"
        );
        assert_eq!(ollama.provider.base_url, "http://box:11434");
        assert!(!ollama.vision);
        let llava = ModelChoice::resolve("ollama:llava:13b", None, &config, &env).unwrap();
        assert!(llava.vision);
    }

    #[test]
    fn a_missing_key_or_a_bad_spec_is_one_sentence_naming_the_fix() {
        let env = env_with(&[]);
        let config = Config::default();
        let missing = ModelChoice::resolve("anthropic:claude-sonnet-4-5", None, &config, &env)
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("ANTHROPIC_API_KEY is not set"),
            "{missing}"
        );
        let bad = ModelChoice::resolve("gpt-4.1", None, &config, &env)
            .unwrap_err()
            .to_string();
        assert!(bad.contains("is not PROVIDER:MODEL"), "{bad}");
        let unknown = ModelChoice::resolve("acme:x", None, &config, &env)
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("unknown provider `acme`"), "{unknown}");
        let compatible = ModelChoice::resolve("openai-compatible:m", None, &config, &env)
            .unwrap_err()
            .to_string();
        assert!(compatible.contains("--base-url"), "{compatible}");
    }

    #[test]
    fn the_config_file_defines_providers_and_overrides_built_ins() {
        let config: Config = toml::from_str(
            r#"
            model = "groq:llama"
            [providers.groq]
            protocol = "openai-chat"
            base_url = "https://example.test/openai/v1/"
            api_key_env = "GROQ_API_KEY"
            vision = true
            [providers.anthropic]
            api_key = "from-file"
            base_url = "http://127.0.0.1:9"
            "#,
        )
        .unwrap();
        let env = env_with(&[("GROQ_API_KEY", "gk")]);
        let groq = ModelChoice::resolve("groq:llama", None, &config, &env).unwrap();
        assert_eq!(groq.provider.base_url, "https://example.test/openai/v1");
        assert_eq!(groq.provider.api_key.as_deref(), Some("gk"));
        assert!(groq.vision);
        let anthropic = ModelChoice::resolve("anthropic:c", None, &config, &env).unwrap();
        assert_eq!(anthropic.provider.api_key.as_deref(), Some("from-file"));
        let overridden =
            ModelChoice::resolve("anthropic:c", Some("http://other:1"), &config, &env).unwrap();
        assert_eq!(overridden.provider.base_url, "http://other:1");

        let typo: Result<Config, _> = toml::from_str("modle = \"x\"");
        assert!(typo.is_err(), "unknown keys are refused, not ignored");
    }
}
