//! The admin API's tokens: where the host finds them (an environment variable, or a file named
//! by the configuration), the token a loopback admin API generates when none is configured
//! (written to `<state.dir>/admin-token`, readable by its user only), and how the CLI finds the
//! token to send. Tokens never sit in `pipeline.toml` in clear.

use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rand::TryRngCore;
use subtle::ConstantTimeEq;

use crate::config::{AdminConfig, PipelineConfig};

/// The environment variable holding the admin token (every call).
pub const ADMIN_TOKEN_ENV: &str = "STAGEHOST_ADMIN_TOKEN";
/// The environment variable holding the read-only token (`GET` calls).
pub const READ_TOKEN_ENV: &str = "STAGEHOST_ADMIN_READ_TOKEN";
/// The file under `state.dir` a loopback admin API writes its generated token to.
pub const GENERATED_FILE: &str = "admin-token";
/// The shortest token accepted from the environment or a file.
pub const MIN_TOKEN_CHARS: usize = 16;
/// Random bytes of a generated token (hex-encoded: twice as many characters).
const GENERATED_BYTES: usize = 32;

/// A secret token. `Debug` does not show it; compare with [`Token::matches`].
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A token of this text.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// Whether `offered` is this token, in time that does not depend on where they differ.
    pub fn matches(&self, offered: &[u8]) -> bool {
        // Lengths differ only when the token is wrong; its length is no secret worth hiding.
        bool::from(self.0.as_bytes().ct_eq(offered))
    }

    /// The token's text (to send it, or to write it to its file).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(…)")
    }
}

/// The tokens the admin API accepts.
#[derive(Debug, Clone)]
pub struct AdminTokens {
    /// May make every call.
    pub admin: Token,
    /// May make `GET` calls only.
    pub read: Option<Token>,
    /// Where the admin token was generated to, when none was configured.
    pub generated: Option<PathBuf>,
    /// Why a generated token could not be written (a full or read-only `state.dir`): the
    /// admin API still needs it, and no local client can find it until a restart writes it.
    pub unwritten: Option<String>,
}

/// Why the admin API cannot start with the tokens it was given.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Off loopback, an admin API without a token would take swaps from anyone.
    #[error(
        "the admin API listens on {listen}, which is not a loopback address, and no admin token \
         is configured: set {ADMIN_TOKEN_ENV} (the token) or admin.token_file / \
         STAGEHOST_ADMIN_TOKEN_FILE (a file holding it), or listen on 127.0.0.1, or set \
         admin.enabled = false"
    )]
    NoTokenOffLoopback {
        /// `admin.listen`.
        listen: String,
    },
    /// A token file could not be read.
    #[error("cannot read the {what} from {}: {source}", path.display())]
    Unreadable {
        /// Which token.
        what: &'static str,
        /// Its file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A configured token is too short to be a secret.
    #[error("the {what} from {from} has {chars} characters; at least {MIN_TOKEN_CHARS} are needed")]
    TooShort {
        /// Which token.
        what: &'static str,
        /// Where it came from (a variable or a file).
        from: String,
        /// Its length.
        chars: usize,
    },
    /// The read-only token would also be the admin token.
    #[error("the read-only token is the admin token: give them different values")]
    Same,
    /// The generated token could not be made or written.
    #[error("cannot write the generated admin token to {}: {source}", path.display())]
    Write {
        /// Its file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl AdminTokens {
    /// The tokens of the admin API of `config` (`state_dir` is `state.dir`), reading the
    /// environment through `env`. With no admin token configured, a loopback admin API
    /// generates one into `<state_dir>/admin-token`; any other is refused. A configured admin
    /// token removes a generated file left by an earlier run (the CLI would send it).
    pub fn resolve(
        config: &AdminConfig,
        state_dir: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, TokenError> {
        let generated_path = state_dir.join(GENERATED_FILE);
        let mut unwritten = None;
        let admin = configured("admin token", ADMIN_TOKEN_ENV, &config.token_file, &env)?;
        let read = configured(
            "read-only token",
            READ_TOKEN_ENV,
            &config.read_token_file,
            &env,
        )?;
        let (admin, generated) = match admin {
            Some(admin) => {
                remove_stale(&generated_path);
                (admin, None)
            }
            None if is_loopback(&config.listen) => {
                let token = generate().map_err(|source| TokenError::Write {
                    path: generated_path.clone(),
                    source,
                })?;
                match write_private(&generated_path, token.expose()) {
                    Ok(()) => (token, Some(generated_path)),
                    Err(source) => {
                        // A token file left by an earlier run would be sent by the CLI.
                        remove_stale(&generated_path);
                        unwritten = Some(
                            TokenError::Write {
                                path: generated_path,
                                source,
                            }
                            .to_string(),
                        );
                        (token, None)
                    }
                }
            }
            None => {
                return Err(TokenError::NoTokenOffLoopback {
                    listen: config.listen.clone(),
                });
            }
        };
        if read.as_ref() == Some(&admin) {
            return Err(TokenError::Same);
        }
        Ok(Self {
            admin,
            read,
            generated,
            unwritten,
        })
    }
}

/// A token from the variable `var` (first) or the file `file`, trimmed; none when neither is set.
fn configured(
    what: &'static str,
    var: &str,
    file: &Option<PathBuf>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<Token>, TokenError> {
    let (text, from) = if let Some(value) = env(var).filter(|v| !v.trim().is_empty()) {
        (value, var.to_string())
    } else if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Unreadable {
            what,
            path: path.clone(),
            source,
        })?;
        (text, path.display().to_string())
    } else {
        return Ok(None);
    };
    let text = text.trim();
    let chars = text.chars().count();
    if chars < MIN_TOKEN_CHARS {
        return Err(TokenError::TooShort { what, from, chars });
    }
    Ok(Some(Token::new(text)))
}

/// Whether `listen` is a loopback address (only this machine reaches it).
pub fn is_loopback(listen: &str) -> bool {
    listen
        .parse::<SocketAddr>()
        .is_ok_and(|address| address.ip().is_loopback())
}

/// A fresh random token: 32 bytes from the operating system, hex-encoded.
pub fn generate() -> std::io::Result<Token> {
    let mut bytes = [0_u8; GENERATED_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(std::io::Error::other)?;
    Ok(Token::new(
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    ))
}

/// Writes `text` to `path` readable and writable by its user only (mode 0600), replacing it
/// whole: a reader never sees half a token, nor the file with wider permissions.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)?;
    // The mode given at creation is narrowed by the umask only; make sure it is exactly 0600.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

fn remove_stale(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!(file = %path.display(),
            "removed the generated admin token of an earlier run: an admin token is configured"),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, "cannot remove an old generated admin token");
        }
    }
}

/// The token the CLI sends: `flag` (`--admin-token` or `STAGEHOST_ADMIN_TOKEN`), else the
/// file `admin.token_file` of `config`, else the token a loopback host generated into its
/// `state.dir`. `config` is the loaded `--config` file, or why it could not be loaded.
pub fn client_token(
    flag: Option<String>,
    config: Result<&PipelineConfig, &anyhow::Error>,
) -> anyhow::Result<Token> {
    if let Some(token) = flag.filter(|t| !t.trim().is_empty()) {
        return Ok(Token::new(token.trim()));
    }
    let config = config.map_err(|why| {
        anyhow::anyhow!(
            "no admin token: pass --admin-token or set {ADMIN_TOKEN_ENV}, or point --config at \
             the host's pipeline.toml so the token it generated in state.dir is found ({why:#})"
        )
    })?;
    let path = config
        .admin
        .token_file
        .clone()
        .unwrap_or_else(|| config.state.dir.join(GENERATED_FILE));
    let text = std::fs::read_to_string(&path).map_err(|error| {
        anyhow::anyhow!(
            "no admin token: cannot read {} ({error}); pass --admin-token or set \
             {ADMIN_TOKEN_ENV} (a host with a configured token writes no file), or start the \
             host on loopback to have it generate one",
            path.display()
        )
    })?;
    Ok(Token::new(text.trim()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn admin(listen: &str) -> AdminConfig {
        AdminConfig {
            listen: listen.into(),
            ..AdminConfig::default()
        }
    }

    const LONG: &str = "0123456789abcdef-admin";
    const READ: &str = "0123456789abcdef-read";

    #[test]
    fn tokens_match_only_themselves() {
        let token = Token::new(LONG);
        assert!(token.matches(LONG.as_bytes()));
        assert!(!token.matches(b"0123456789abcdef-admiN"));
        assert!(!token.matches(b"0123456789abcdef-admin "));
        assert!(!token.matches(b""));
        assert_eq!(format!("{token:?}"), "Token(…)");
    }

    #[test]
    fn loopback_is_only_the_loopback_addresses() {
        assert!(is_loopback("127.0.0.1:9091"));
        assert!(is_loopback("127.3.2.1:9091"));
        assert!(is_loopback("[::1]:9091"));
        assert!(!is_loopback("0.0.0.0:9091"));
        assert!(!is_loopback("[::]:9091"));
        assert!(!is_loopback("10.1.2.3:9091"));
        assert!(!is_loopback("localhost:9091"));
    }

    #[test]
    fn loopback_without_a_token_generates_one_readable_by_its_user_only() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let tokens = AdminTokens::resolve(&admin("127.0.0.1:9091"), &state, |_| None).unwrap();
        let file = state.join(GENERATED_FILE);
        assert_eq!(tokens.generated.as_deref(), Some(file.as_path()));
        let written = std::fs::read_to_string(&file).unwrap();
        assert_eq!(written.trim(), tokens.admin.expose());
        assert_eq!(tokens.admin.expose().len(), 64);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        let again = AdminTokens::resolve(&admin("127.0.0.1:9091"), &state, |_| None).unwrap();
        assert_ne!(again.admin, tokens.admin, "a new token each start");
    }

    #[test]
    fn a_generated_token_that_cannot_be_written_is_kept_in_memory_and_said_why() {
        let dir = tempfile::tempdir().unwrap();
        // The state dir is a file: nothing can be written under it.
        let state_dir = dir.path().join("not-a-dir");
        std::fs::write(&state_dir, "x").unwrap();
        let tokens = AdminTokens::resolve(&admin("127.0.0.1:9091"), &state_dir, |_| None).unwrap();
        assert_eq!(tokens.generated, None);
        let why = tokens.unwritten.expect("the failure is kept");
        assert!(why.contains("admin-token"), "{why}");
        assert!(!tokens.admin.matches(b""), "a token is still required");
    }

    #[test]
    fn off_loopback_without_a_token_is_refused_naming_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let error = AdminTokens::resolve(&admin("0.0.0.0:9091"), dir.path(), |_| None)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(ADMIN_TOKEN_ENV) && error.contains("admin.token_file"),
            "{error}"
        );
        assert!(!dir.path().join(GENERATED_FILE).exists());
    }

    #[test]
    fn tokens_come_from_the_environment_first_then_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("read");
        std::fs::write(&file, format!("  {READ}\n")).unwrap();
        std::fs::write(dir.path().join(GENERATED_FILE), "stale").unwrap();
        let config = AdminConfig {
            read_token_file: Some(file),
            ..admin("0.0.0.0:9091")
        };
        let env = |name: &str| (name == ADMIN_TOKEN_ENV).then(|| LONG.to_string());
        let tokens = AdminTokens::resolve(&config, dir.path(), env).unwrap();
        assert!(tokens.admin.matches(LONG.as_bytes()));
        assert!(tokens.read.unwrap().matches(READ.as_bytes()));
        assert!(tokens.generated.is_none());
        assert!(
            !dir.path().join(GENERATED_FILE).exists(),
            "stale file removed"
        );
    }

    #[test]
    fn short_or_shared_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let short = |name: &str| (name == ADMIN_TOKEN_ENV).then(|| "secret".to_string());
        let error = AdminTokens::resolve(&admin("127.0.0.1:1"), dir.path(), short).unwrap_err();
        assert!(
            matches!(error, TokenError::TooShort { chars: 6, .. }),
            "{error}"
        );
        let same = |_: &str| Some(LONG.to_string());
        let error = AdminTokens::resolve(&admin("127.0.0.1:1"), dir.path(), same).unwrap_err();
        assert!(matches!(error, TokenError::Same), "{error}");
    }

    #[test]
    fn generated_tokens_are_random_hex() {
        let (a, b) = (generate().unwrap(), generate().unwrap());
        assert_ne!(a, b);
        assert!(a.expose().chars().all(|c| c.is_ascii_hexdigit()));
    }
}
