//! The two Mercure protocols a hub speaks on the same endpoint: draft-dunglas-mercure-07 (the
//! one every deployed client speaks) and draft-dunglas-mercure-08 (2026: `match*` matchers,
//! `last_event_id`, `Mercure-Last-Event-ID`, `at+jwt` tokens, the
//! `__Secure-mercure_access_token` cookie).
//!
//! Owns the [`Dialect`] of one request and the set of dialects a hub accepts ([`Dialects`], the
//! `--dialects` setting). Telling a request's dialect from what it carries is
//! [`crate::http::dialect`]'s job; the hub, history and fan-out below the HTTP edge are shared
//! by both dialects and never see this type. The authorization step will take a `Dialect` to
//! pick the grant (the `mercure` claim or draft-08's `authorization_details`).

use std::fmt;
use std::str::FromStr;

/// The protocol one request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// draft-dunglas-mercure-07: `topic`, `lastEventID`, `Last-Event-ID` in the response,
    /// `mercureAuthorization`, the `mercure` claim, tokens in the URL.
    Draft07,
    /// draft-dunglas-mercure-08: `match`/`match_<type>`, `last_event_id`,
    /// `Mercure-Last-Event-ID` in the response, `__Secure-mercure_access_token`, `at+jwt`.
    Draft08,
}

impl Dialect {
    /// The name used in the settings and in error messages: `draft-07`, `draft-08`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft07 => "draft-07",
            Self::Draft08 => "draft-08",
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Dialect {
    type Err = String;

    /// `draft-07` or `draft-08` (also the full draft names, `draft-dunglas-mercure-07`/`-08`).
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "draft-07" | "draft-dunglas-mercure-07" => Ok(Self::Draft07),
            "draft-08" | "draft-dunglas-mercure-08" => Ok(Self::Draft08),
            other => Err(format!(
                "{other:?} is not a dialect (expected draft-07 or draft-08)"
            )),
        }
    }
}

/// The dialects a hub accepts. `Default`: both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialects {
    draft07: bool,
    draft08: bool,
}

impl Default for Dialects {
    fn default() -> Self {
        Self::BOTH
    }
}

impl Dialects {
    /// Both dialects on the same endpoint, chosen per request.
    pub const BOTH: Self = Self {
        draft07: true,
        draft08: true,
    };

    /// Only `dialect`.
    pub fn only(dialect: Dialect) -> Self {
        Self {
            draft07: dialect == Dialect::Draft07,
            draft08: dialect == Dialect::Draft08,
        }
    }

    /// Parses a comma-separated list (`draft-07,draft-08`), as the `--dialects` setting.
    ///
    /// # Errors
    /// An unknown name, or an empty list (a hub that speaks no dialect answers nothing).
    pub fn parse_list<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut set = Self {
            draft07: false,
            draft08: false,
        };
        for name in names
            .into_iter()
            .flat_map(|name| name.split(','))
            .filter(|name| !name.trim().is_empty())
        {
            match name.parse::<Dialect>()? {
                Dialect::Draft07 => set.draft07 = true,
                Dialect::Draft08 => set.draft08 = true,
            }
        }
        if !set.draft07 && !set.draft08 {
            return Err("at least one dialect is needed (draft-07, draft-08)".into());
        }
        Ok(set)
    }

    /// Whether requests in `dialect` are served.
    pub fn allows(self, dialect: Dialect) -> bool {
        match dialect {
            Dialect::Draft07 => self.draft07,
            Dialect::Draft08 => self.draft08,
        }
    }

    /// The dialect of a request that shows none: draft-07 (every deployed client), unless it
    /// is off.
    pub fn fallback(self) -> Dialect {
        if self.draft07 {
            Dialect::Draft07
        } else {
            Dialect::Draft08
        }
    }
}

impl fmt::Display for Dialects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.draft07, self.draft08) {
            (true, true) => f.write_str("draft-07,draft-08"),
            (true, false) => f.write_str("draft-07"),
            _ => f.write_str("draft-08"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_parses_and_refuses_unknown_or_empty() {
        assert_eq!(
            Dialects::parse_list(["draft-07,draft-08"]),
            Ok(Dialects::BOTH)
        );
        assert_eq!(
            Dialects::parse_list(["draft-08"]),
            Ok(Dialects::only(Dialect::Draft08))
        );
        assert_eq!(
            Dialects::parse_list(["draft-07", " draft-dunglas-mercure-08"]),
            Ok(Dialects::BOTH)
        );
        assert!(Dialects::parse_list(["draft-09"]).is_err());
        assert!(Dialects::parse_list([""]).is_err());
        assert_eq!(
            Dialects::only(Dialect::Draft08).fallback(),
            Dialect::Draft08
        );
        assert_eq!(Dialects::BOTH.to_string(), "draft-07,draft-08");
    }
}
