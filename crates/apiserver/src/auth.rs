//! Authentication: client certificates signed by the cluster CA, and static bearer tokens.
//! (Authorization comes later; every authenticated user is allowed for now.)

use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    pub fn from_cert(name: String, mut groups: Vec<String>) -> Self {
        groups.push("system:authenticated".into());
        UserInfo {
            name,
            uid: String::new(),
            groups,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("reading token file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("token file {path} line {line}: {why}")]
    Parse {
        path: String,
        line: usize,
        why: String,
    },
}

/// Static tokens from upstream's CSV format: `token,user,uid,"group1,group2"`.
#[derive(Debug, Default, Clone)]
pub struct TokenAuthenticator {
    tokens: HashMap<String, UserInfo>,
}

impl TokenAuthenticator {
    pub fn from_file(path: &Path) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|(line, why)| TokenFileError::Parse {
            path: path.display().to_string(),
            line,
            why,
        })
    }

    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut tokens = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split_csv(line);
            if fields.len() < 3 {
                return Err((
                    i + 1,
                    format!(
                        "expected token,user,uid[,\"groups\"], got {} fields",
                        fields.len()
                    ),
                ));
            }
            if fields[0].is_empty() {
                return Err((i + 1, "empty token".into()));
            }
            let mut groups: Vec<String> = fields
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            groups.push("system:authenticated".into());
            tokens.insert(
                fields[0].clone(),
                UserInfo {
                    name: fields[1].clone(),
                    uid: fields[2].clone(),
                    groups,
                },
            );
        }
        Ok(TokenAuthenticator { tokens })
    }

    pub fn insert(&mut self, token: String, user: UserInfo) {
        self.tokens.insert(token, user);
    }

    pub fn authenticate(&self, authorization: Option<&str>) -> Option<UserInfo> {
        let token = authorization?.strip_prefix("Bearer ")?.trim();
        self.tokens.get(token).cloned()
    }
}

/// Split one CSV line, honouring double quotes.
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                current.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    fields.push(current);
    fields.into_iter().map(|f| f.trim().to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstream_token_csv() {
        let auth = TokenAuthenticator::parse(
            "# comment\nsecret1,alice,1001,\"dev,ops\"\nsecret2,bob,1002\n",
        )
        .unwrap();
        let alice = auth.authenticate(Some("Bearer secret1")).unwrap();
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.uid, "1001");
        assert_eq!(alice.groups, vec!["dev", "ops", "system:authenticated"]);
        assert_eq!(
            auth.authenticate(Some("Bearer secret2")).unwrap().groups,
            vec!["system:authenticated"]
        );
        assert!(auth.authenticate(Some("Bearer nope")).is_none());
        assert!(auth.authenticate(Some("Basic secret1")).is_none());
        assert!(TokenAuthenticator::parse("onlytoken,user").is_err());
    }
}
