//! The user directory rules: how `user.get` reads its filter, sort and page (§5.2), and the
//! avatar colour of the messenger's user card. Pure.

use crate::value::{Array, Key, Value};

/// Classic list methods page by 50 (§5.2).
pub const PAGE_SIZE: usize = 50;

/// A field of the users table that `user.get` can filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserField {
    Id,
    Name,
    LastName,
    Email,
    Active,
}

impl UserField {
    fn parse(key: &str) -> Option<UserField> {
        Some(match key {
            "ID" => UserField::Id,
            "NAME" => UserField::Name,
            "LAST_NAME" => UserField::LastName,
            "EMAIL" => UserField::Email,
            "ACTIVE" => UserField::Active,
            _ => return None,
        })
    }
}

/// How a filter value is compared: the prefix of its key (`%LAST_NAME`, `>=ID`, `!EMAIL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterOp {
    /// No prefix: equal, or for `NAME`/`LAST_NAME` a LIKE pattern when the value has a `%`.
    Plain,
    /// `=` and `@`: equal (one of the values, for a list).
    Equal,
    /// `!` and `!=`, `!@`: none of the values.
    NotEqual,
    /// `%`: contains the value, its own `%` and `_` taken literally.
    Contains,
    /// `!%`: does not contain the value.
    NotContains,
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
}

impl FilterOp {
    /// Splits a filter key into its operator and field name; the longest prefix wins.
    fn split(key: &str) -> (FilterOp, &str) {
        const PREFIXES: &[(&str, FilterOp)] = &[
            ("!=", FilterOp::NotEqual),
            ("!@", FilterOp::NotEqual),
            ("!%", FilterOp::NotContains),
            (">=", FilterOp::GreaterOrEqual),
            ("<=", FilterOp::LessOrEqual),
            ("=", FilterOp::Equal),
            ("@", FilterOp::Equal),
            ("!", FilterOp::NotEqual),
            ("%", FilterOp::Contains),
            (">", FilterOp::Greater),
            ("<", FilterOp::Less),
        ];
        PREFIXES
            .iter()
            .find_map(|(p, op)| key.strip_prefix(p).map(|field| (*op, field)))
            .unwrap_or((FilterOp::Plain, key))
    }
}

/// A filter value, already coerced for its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterValue {
    /// `ID`: the positive ids among the given ones (an empty list matches nobody).
    Ids(Vec<i64>),
    /// `ID` under `>`, `<`, `>=`, `<=`.
    Id(i64),
    /// `NAME`, `LAST_NAME`, `EMAIL`: one or more texts.
    Texts(Vec<String>),
    /// `ACTIVE`, read with PHP truthiness.
    Flag(bool),
}

/// One condition of `user.get`'s filter; all conditions must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub field: UserField,
    pub op: FilterOp,
    pub value: FilterValue,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserFilter {
    pub conditions: Vec<Condition>,
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
/// parameters themselves (the method page's first example filters at the top level).
///
/// Filter keys are a field the users table holds (`ID`, `NAME`, `LAST_NAME`, `EMAIL`, `ACTIVE`)
/// with an optional operator prefix ([`FilterOp`]: `%`, `=`, `!`, `>`, `<`, `>=`, `<=` and their
/// kin), as the method page documents; other keys are ignored. `SORT` and `ORDER` apply only
/// when both are given, as in `rest/lib/api/user.php`; otherwise ids ascend. `start` is the
/// framework's offset (§1.6).
pub fn user_query(params: &Array, start: i64) -> UserQuery {
    let p = params.upper_case_keys();
    let filter_src = match p.get_str("FILTER") {
        Some(Value::Arr(f)) => f.upper_case_keys(),
        _ => p.clone(),
    };
    let mut filter = UserFilter::default();
    for (key, value) in filter_src.iter() {
        let Key::Str(key) = key else { continue };
        let (op, name) = FilterOp::split(key);
        let Some(field) = UserField::parse(name) else {
            continue;
        };
        if let Some(value) = filter_value(field, op, value) {
            filter.conditions.push(Condition { field, op, value });
        }
    }
    let (sort, descending) = match (p.get_str("SORT"), p.get_str("ORDER")) {
        (Some(sort), Some(order)) => {
            let sort = match sort.to_php_string().to_uppercase().as_str() {
                "NAME" => UserSort::Name,
                "LAST_NAME" => UserSort::LastName,
                "EMAIL" => UserSort::Email,
                _ => UserSort::Id,
            };
            (sort, order.to_php_string().eq_ignore_ascii_case("desc"))
        }
        _ => (UserSort::Id, false),
    };
    UserQuery {
        filter,
        sort,
        descending,
        offset: start.max(0) as usize,
        limit: PAGE_SIZE,
    }
}

/// Coerces a filter value for its field and operator; `None` drops the condition (a null value,
/// or an operator that means nothing for the field, such as `>ACTIVE`).
fn filter_value(field: UserField, op: FilterOp, v: &Value) -> Option<FilterValue> {
    if v.is_null() {
        return None;
    }
    let ordered = matches!(
        op,
        FilterOp::Greater | FilterOp::GreaterOrEqual | FilterOp::Less | FilterOp::LessOrEqual
    );
    let pattern = matches!(op, FilterOp::Contains | FilterOp::NotContains);
    Some(match field {
        UserField::Id if ordered => FilterValue::Id(first(v).intval()),
        UserField::Id if pattern => return None,
        UserField::Id => FilterValue::Ids(ids(v)),
        UserField::Active if ordered || pattern => return None,
        UserField::Active => FilterValue::Flag(active_flag(v)),
        _ => FilterValue::Texts(match v {
            Value::Arr(a) if !ordered => a.values().map(Value::to_php_string).collect(),
            other => vec![first(other).to_php_string()],
        }),
    })
}

/// A list's first value, or the value itself.
fn first(v: &Value) -> &Value {
    match v {
        Value::Arr(a) => a.values().next().unwrap_or(&Value::Null),
        scalar => scalar,
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

/// `ACTIVE` as the real filter reads it: `N` (exactly) and every PHP-falsy value (`""`, `"0"`,
/// `0`, `false`) select inactive users; anything else, the form-encoded `"false"` included,
/// selects active ones (`rest/lib/api/user.php`; b24jssdk#533).
fn active_flag(v: &Value) -> bool {
    match v {
        Value::Str(s) if s == "N" => false,
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

    fn cond(field: UserField, op: FilterOp, value: FilterValue) -> Condition {
        Condition { field, op, value }
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
        assert_eq!(
            q.filter.conditions,
            [
                cond(
                    UserField::Name,
                    FilterOp::Plain,
                    FilterValue::Texts(vec!["Iva%".into()])
                ),
                cond(UserField::Active, FilterOp::Plain, FilterValue::Flag(false)),
            ]
        );
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
        assert_eq!(
            q.filter.conditions,
            [
                cond(UserField::Id, FilterOp::Plain, FilterValue::Ids(vec![1, 5])),
                cond(
                    UserField::Email,
                    FilterOp::Plain,
                    FilterValue::Texts(vec!["a@b.c".into()])
                ),
            ]
        );
        assert_eq!((q.sort, q.descending, q.offset), (UserSort::Email, true, 0));
    }

    #[test]
    fn active_is_read_with_php_truthiness() {
        let active = |v: Value| {
            let q = user_query(&params(&[("ACTIVE", v)]), 0);
            match q.filter.conditions.as_slice() {
                [Condition {
                    value: FilterValue::Flag(f),
                    ..
                }] => Some(*f),
                [] => None,
                other => panic!("{other:?}"),
            }
        };
        for yes in [
            Value::from("Y"),
            Value::from("false"),
            Value::from("n"),
            Value::Bool(true),
            Value::Int(1),
        ] {
            assert_eq!(active(yes.clone()), Some(true), "{yes:?}");
        }
        for no in [
            Value::from("N"),
            Value::from("0"),
            Value::from(""),
            Value::Bool(false),
            Value::Int(0),
        ] {
            assert_eq!(active(no.clone()), Some(false), "{no:?}");
        }
        assert_eq!(active(Value::Null), None);
    }

    #[test]
    fn prefixes_split_from_the_field() {
        let q = user_query(
            &params(&[(
                "FILTER",
                Value::map([
                    ("%last_name", Value::from("ov")),
                    (">=ID", Value::from("3")),
                    ("!EMAIL", Value::list(["a@b.c".into(), "d@e.f".into()])),
                    ("!%NAME", Value::from("x")),
                    (">ACTIVE", Value::from("Y")),
                    ("%ID", Value::from("1")),
                    ("UF_DEPARTMENT", Value::from("1")),
                ]),
            )]),
            0,
        );
        assert_eq!(
            q.filter.conditions,
            [
                cond(
                    UserField::LastName,
                    FilterOp::Contains,
                    FilterValue::Texts(vec!["ov".into()])
                ),
                cond(UserField::Id, FilterOp::GreaterOrEqual, FilterValue::Id(3)),
                cond(
                    UserField::Email,
                    FilterOp::NotEqual,
                    FilterValue::Texts(vec!["a@b.c".into(), "d@e.f".into()])
                ),
                cond(
                    UserField::Name,
                    FilterOp::NotContains,
                    FilterValue::Texts(vec!["x".into()])
                ),
            ]
        );
    }

    #[test]
    fn sort_and_order_apply_only_together() {
        let q = user_query(&params(&[("ORDER", "DESC".into())]), 0);
        assert_eq!((q.sort, q.descending), (UserSort::Id, false));
        let q = user_query(&params(&[("SORT", "LAST_NAME".into())]), 0);
        assert_eq!((q.sort, q.descending), (UserSort::Id, false));
        let q = user_query(
            &params(&[("SORT", "LAST_NAME".into()), ("ORDER", "asc".into())]),
            0,
        );
        assert_eq!((q.sort, q.descending), (UserSort::LastName, false));
    }
}
