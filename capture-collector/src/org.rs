//! Organisation names: the unit of isolation. A name is also a directory name under the data
//! directory, so only a DNS-label-like form is accepted: it cannot climb out of it (`..`,
//! `/`), hide (`.x`), or collide by case.

use std::fmt;

/// Longest organisation name (a DNS label).
pub const MAX_LEN: usize = 63;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrgName(String);

#[derive(Debug, thiserror::Error)]
#[error(
    "{0:?} is not an organisation name: use 1 to 63 lowercase letters, digits and '-', \
     starting and ending with a letter or digit"
)]
pub struct BadOrgName(pub String);

impl OrgName {
    pub fn parse(name: &str) -> Result<Self, BadOrgName> {
        let bytes = name.as_bytes();
        let edge_ok =
            |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let ok = !name.is_empty()
            && name.len() <= MAX_LEN
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && edge_ok(bytes.first())
            && edge_ok(bytes.last());
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(BadOrgName(name.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrgName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for OrgName {
    type Err = BadOrgName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["acme", "a", "team-7", "0rg", &"x".repeat(63)] {
            assert!(OrgName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "..",
            ".",
            "a/b",
            "Acme",
            "-a",
            "a-",
            "a_b",
            "a.b",
            "é",
            &"x".repeat(64),
            "a b",
        ] {
            assert!(OrgName::parse(bad).is_err(), "{bad}");
        }
    }
}
