//! Credentials for servers. Passwords and tokens come from an environment
//! variable or a file, read while checking so that a missing one is
//! reported by `weir validate` with the variable or file named, never the
//! value.

use std::fmt;
use std::path::Path;

use super::at::At;
use crate::check::resolve;

/// A password or token. Its value is never printed: `Debug` shows where it
/// came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    origin: String,
}

impl Secret {
    /// A secret with a description of where it came from (for messages).
    pub fn new(value: impl Into<String>, origin: impl Into<String>) -> Secret {
        Secret {
            value: value.into(),
            origin: origin.into(),
        }
    }

    /// The value, for handing to a client library.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Where it came from: `environment variable X` or `file F`.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(from {})", self.origin)
    }
}

/// Credentials for a server. All optional; which ones a server accepts is
/// its own business.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub user: Option<String>,
    /// Password (with `user`).
    pub password: Option<Secret>,
    /// Token (NATS).
    pub token: Option<Secret>,
}

/// Credential fields as given. (Each connector's table repeats them:
/// serde's `flatten` would defeat `deny_unknown_fields`.)
#[derive(Debug, Default)]
pub(crate) struct AuthFields {
    pub user: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub token_env: Option<String>,
    pub token_file: Option<String>,
}

/// The credential fields of a connector's spec.
macro_rules! auth_of {
    ($s:expr) => {
        $crate::connectors::credentials::AuthFields {
            user: $s.user.clone(),
            password_env: $s.password_env.clone(),
            password_file: $s.password_file.clone(),
            token_env: $s.token_env.clone(),
            token_file: $s.token_file.clone(),
        }
    };
}
pub(crate) use auth_of;

impl At<'_, '_> {
    /// Reads the secrets the fields name and checks they fit together.
    pub(crate) fn credentials(&mut self, a: AuthFields, base_dir: &Path) -> Credentials {
        let password = self.secret("password", a.password_env, a.password_file, base_dir);
        let token = self.secret("token", a.token_env, a.token_file, base_dir);
        if password.is_some() && a.user.is_none() {
            self.bad("password_env", "a password needs `user`");
        }
        Credentials {
            user: a.user,
            password,
            token,
        }
    }

    /// The secret `what` (`password`, `token`) from its `_env` variable or
    /// `_file`, at most one of which may be given.
    fn secret(
        &mut self,
        what: &str,
        env: Option<String>,
        file: Option<String>,
        base_dir: &Path,
    ) -> Option<Secret> {
        match (env, file) {
            (None, None) => None,
            (Some(_), Some(_)) => {
                self.bad(
                    &format!("{what}_env"),
                    format!("give either `{what}_env` or `{what}_file`, not both"),
                );
                None
            }
            (Some(var), None) => match std::env::var(&var) {
                Ok(v) if !v.is_empty() => {
                    Some(Secret::new(v, format!("environment variable {var}")))
                }
                Ok(_) => {
                    self.bad(
                        &format!("{what}_env"),
                        format!("environment variable {var} is empty"),
                    );
                    None
                }
                Err(_) => {
                    self.bad(
                        &format!("{what}_env"),
                        format!("environment variable {var} is not set"),
                    );
                    None
                }
            },
            (None, Some(f)) => {
                let path = resolve(base_dir, &f);
                match std::fs::read_to_string(&path) {
                    Ok(v) if !v.trim().is_empty() => Some(Secret::new(
                        v.trim_end_matches(['\n', '\r']).to_string(),
                        format!("file {}", path.display()),
                    )),
                    Ok(_) => {
                        self.bad(
                            &format!("{what}_file"),
                            format!("{} is empty", path.display()),
                        );
                        None
                    }
                    Err(e) => {
                        self.bad(
                            &format!("{what}_file"),
                            format!("cannot read {}: {e}", path.display()),
                        );
                        None
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    #[test]
    fn secrets_are_not_printed() {
        let s = Secret::new("hunter2", "environment variable X");
        assert_eq!(format!("{s:?}"), "Secret(from environment variable X)");
    }

    /// The minimal pipeline reading a NATS source with these credential lines.
    fn with_credentials(lines: &str) -> String {
        patched(
            &minimal(),
            "type = \"memory\"",
            &format!("type = \"nats\"\nurl = \"nats://127.0.0.1\"\nstream = \"S\"\n{lines}"),
        )
    }

    #[test]
    fn credential_problems() {
        let dir = tempfile::tempdir().expect("temp dir");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").expect("write");
        let empty_file = format!(
            "password_file = {:?}\nuser = \"u\"",
            empty.display().to_string()
        );
        let empty_message = format!("{} is empty", empty.display());
        std::env::set_var("WEIR_CONFIG_CASES_EMPTY", "");
        check(&[
            case(
                "environment variable and file",
                with_credentials(
                    "user = \"u\"\npassword_env = \"A\"\npassword_file = \"Cargo.toml\"",
                ),
                "sources[0].password_env",
                Some("password_env ="),
                "give either `password_env` or `password_file`, not both",
            ),
            case(
                "unset variable",
                with_credentials("token_env = \"WEIR_CONFIG_CASES_UNSET\""),
                "sources[0].token_env",
                Some("token_env ="),
                "environment variable WEIR_CONFIG_CASES_UNSET is not set",
            ),
            case(
                "empty variable",
                with_credentials("token_env = \"WEIR_CONFIG_CASES_EMPTY\""),
                "sources[0].token_env",
                Some("token_env ="),
                "environment variable WEIR_CONFIG_CASES_EMPTY is empty",
            ),
            case(
                "empty file",
                with_credentials(&empty_file),
                "sources[0].password_file",
                Some("password_file ="),
                &empty_message,
            ),
            case(
                "missing file",
                with_credentials("token_file = \"/nonexistent/token\""),
                "sources[0].token_file",
                Some("token_file ="),
                "cannot read /nonexistent/token: No such file or directory (os error 2)",
            ),
            case(
                "password without user",
                with_credentials("password_file = \"Cargo.toml\""),
                "sources[0].password_env",
                Some("[[sources]]"),
                "a password needs `user`",
            ),
        ]);
    }
}
