//! The user directory rules: how `user.get` reads its filter, sort and page (§5.2), and the
//! avatar colour of the messenger's user card. Pure.

use crate::value::{Array, Key, Value};

/// Classic list methods page by 50 (§5.2).
pub const PAGE_SIZE: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameMatch {
    Exact(String),
    /// A SQL LIKE pattern: `%` as given by the caller, or added around for the `%NAME` key.
    Like(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserFilter {
    /// `None`: any id. `Some(empty)`: no user matches.
    pub ids: Option<Vec<i64>>,
    /// Compared without regard to ASCII case, as e-mail addresses are.
    pub email: Option<String>,
    pub active: Option<bool>,
    pub name: Option<NameMatch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserSort {
    #[default]
    Id,
    Name,
    LastName,
    Email,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserQuery {
    pub filter: UserFilter,
    pub sort: UserSort,
    pub descending: bool,
    pub offset: usize,
    pub limit: usize,
}

/// `user.get`: the filter is the `FILTER` array when there is one, otherwise the top-level
/// parameters themselves (the method page's first example filters at the top level). Filter keys
/// other than ID, EMAIL, ACTIVE and NAME are ignored. `start` is the framework's offset (§1.6).
pub fn user_query(params: &Array, start: i64) -> UserQuery {
    let p = params.upper_case_keys();
    let filter_src = match p.get_str("FILTER") {
        Some(Value::Arr(f)) => f.upper_case_keys(),
        _ => p.clone(),
    };
    let mut filter = UserFilter::default();
    for (key, value) in filter_src.iter() {
        let Key::Str(key) = key else { continue };
        match key.as_str() {
            "ID" | "@ID" | "=ID" => filter.ids = Some(ids(value)),
            "EMAIL" | "=EMAIL" => filter.email = Some(value.to_php_string()),
            "ACTIVE" => filter.active = Some(flag(value)),
            "NAME" | "=NAME" => {
                let v = value.to_php_string();
                filter.name = Some(if v.contains('%') {
                    NameMatch::Like(v)
                } else {
                    NameMatch::Exact(v)
                });
            }
            "%NAME" => {
                filter.name = Some(NameMatch::Like(format!("%{}%", value.to_php_string())));
            }
            _ => {}
        }
    }
    let sort = match p.get_str("SORT").map(|v| v.to_php_string().to_uppercase()) {
        Some(s) if s == "NAME" => UserSort::Name,
        Some(s) if s == "LAST_NAME" => UserSort::LastName,
        Some(s) if s == "EMAIL" => UserSort::Email,
        _ => UserSort::Id,
    };
    let descending = p
        .get_str("ORDER")
        .is_some_and(|v| v.to_php_string().eq_ignore_ascii_case("desc"));
    UserQuery {
        filter,
        sort,
        descending,
        offset: start.max(0) as usize,
        limit: PAGE_SIZE,
    }
}

/// One id or an array of them; ids that are not positive match nobody.
fn ids(v: &Value) -> Vec<i64> {
    match v {
        Value::Arr(a) => a.values().map(Value::intval).filter(|i| *i > 0).collect(),
        scalar => Some(scalar.intval())
            .filter(|i| *i > 0)
            .into_iter()
            .collect(),
    }
}

/// Bitrix flags are `Y`/`N`; JSON clients send booleans, form clients `true`/`false`.
fn flag(v: &Value) -> bool {
    match v {
        Value::Str(s) => matches!(s.to_ascii_uppercase().as_str(), "Y" | "TRUE" | "1"),
        other => other.is_truthy(),
    }
}

/// The messenger gives every user a colour from its palette; here it follows from the id, so a
/// user keeps the same colour across calls.
pub fn user_color(user_id: i64) -> &'static str {
    const PALETTE: &[&str] = &[
        "#df532d", "#1eb4aa", "#4ba984", "#ab7761", "#29619b", "#728f7a", "#ba9c7b", "#e8a441",
        "#556574", "#909090", "#e16d66", "#58cc47", "#9a86b6", "#f76187", "#8a8a8a", "#47a2d8",
    ];
    PALETTE[user_id.rem_euclid(PALETTE.len() as i64) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, Value)]) -> Array {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), v.clone()))
            .collect()
    }

    #[test]
    fn filter_from_filter_key_or_top_level() {
        let q = user_query(
            &params(&[(
                "filter",
                Value::map([("name", Value::from("Iva%")), ("ACTIVE", Value::from("N"))]),
            )]),
            100,
        );
        assert_eq!(q.filter.name, Some(NameMatch::Like("Iva%".into())));
        assert_eq!(q.filter.active, Some(false));
        assert_eq!(q.offset, 100);
        let q = user_query(
            &params(&[
                ("ID", Value::list([1.into(), "5".into(), 0.into()])),
                ("EMAIL", "a@b.c".into()),
                ("SORT", "email".into()),
                ("ORDER", "DESC".into()),
            ]),
            -1,
        );
        assert_eq!(q.filter.ids, Some(vec![1, 5]));
        assert_eq!(q.filter.email.as_deref(), Some("a@b.c"));
        assert_eq!((q.sort, q.descending, q.offset), (UserSort::Email, true, 0));
        let q = user_query(&params(&[("ACTIVE", Value::Bool(true))]), 0);
        assert_eq!(q.filter.active, Some(true));
    }
}
