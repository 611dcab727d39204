//! The bearer token of the admin API: configured (`admin.token`), or generated once and kept
//! in `data_dir/admin-token`, readable by its owner only, and printed in the log only when it
//! is generated. Compared in constant time.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ross_config::AdminSettings;
use subtle::ConstantTimeEq;

/// The file holding a generated token.
const TOKEN_FILE: &str = "admin-token";

/// Why the token could not be had.
#[derive(Debug, thiserror::Error)]
#[error("admin token file {path}: {source}")]
pub struct TokenError {
    path: PathBuf,
    source: std::io::Error,
}

/// The admin API's token.
pub struct AdminToken {
    token: String,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<hidden>)")
    }
}

impl AdminToken {
    /// The configured token, or the one kept in `data_dir` (generated on first use).
    pub fn resolve(settings: &AdminSettings, data_dir: &Path) -> Result<AdminToken, TokenError> {
        if let Some(token) = &settings.token {
            return Ok(AdminToken {
                token: token.clone(),
            });
        }
        let path = data_dir.join(TOKEN_FILE);
        let err = |source| TokenError {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => {
                let mode = std::fs::metadata(&path).map_err(err)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(file = %path.display(), "admin token file was readable by others: made private");
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                        .map_err(err)?;
                }
                tracing::info!(file = %path.display(), "admin token read from data_dir");
                return Ok(AdminToken {
                    token: text.trim().to_owned(),
                });
            }
            Ok(_) => std::fs::remove_file(&path).map_err(err)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let mut random = [0u8; 32];
        getrandom::getrandom(&mut random).map_err(|e| err(std::io::Error::other(e.to_string())))?;
        let token: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(err)?;
        file.write_all(token.as_bytes()).map_err(err)?;
        file.sync_all().map_err(err)?;
        tracing::warn!(
            token = %token, file = %path.display(),
            "admin token generated (shown this once; kept in the file, readable by its owner \
             only; set admin.token to choose one)"
        );
        Ok(AdminToken { token })
    }

    /// Whether `presented` is the token, compared in constant time.
    pub fn verify(&self, presented: &str) -> bool {
        self.token.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let none = ross_config::Settings::default().admin;
        let first = AdminToken::resolve(&none, dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = AdminToken::resolve(&none, dir.path()).unwrap();
        assert_eq!(first.token, second.token);
        assert_eq!(first.token.len(), 64);
        assert!(first.verify(&second.token));
        assert!(!first.verify("wrong"));
        assert!(!first.verify(""));
        let set = AdminSettings {
            token: Some("configured-token-1234".into()),
            ..none.clone()
        };
        assert!(AdminToken::resolve(&set, dir.path())
            .unwrap()
            .verify("configured-token-1234"));
    }
}
