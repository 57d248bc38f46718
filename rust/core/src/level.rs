//! The levels of the drafting hierarchy: the tag every draft-tree node carries to say which
//! store produced it, and the names the settings use for them.

use crate::error::{Error, Result};

/// One level of the drafting hierarchy, from most to least local.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    /// n-grams of this request (prompt + accepted tokens).
    Context = 0,
    /// n-grams the target model tends to produce (frozen + grown from finished requests).
    Model = 1,
    /// Continuations seen in a large corpus (suffix array).
    Corpus = 2,
}

impl Level {
    /// All levels in the default order.
    pub const ALL: [Level; 3] = [Level::Context, Level::Model, Level::Corpus];

    /// The level with this numeric id (`Level as u8`).
    pub fn from_u8(v: u8) -> Option<Level> {
        match v {
            0 => Some(Level::Context),
            1 => Some(Level::Model),
            2 => Some(Level::Corpus),
            _ => None,
        }
    }

    /// Lower-case name: `"context"`, `"model"` or `"corpus"`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Context => "context",
            Level::Model => "model",
            Level::Corpus => "corpus",
        }
    }

    /// Parses a lower-case level name.
    pub fn from_name(name: &str) -> Result<Level> {
        match name {
            "context" => Ok(Level::Context),
            "model" => Ok(Level::Model),
            "corpus" => Ok(Level::Corpus),
            other => Err(Error::InvalidArgument(format!(
                "unknown level {other:?} (expected \"context\", \"model\" or \"corpus\")"
            ))),
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names_round_trip() {
        for l in Level::ALL {
            assert_eq!(Level::from_name(l.name()).ok(), Some(l));
            assert_eq!(Level::from_u8(l as u8), Some(l));
        }
        assert!(Level::from_name("nope").is_err());
        assert_eq!(Level::from_u8(3), None);
    }
}
