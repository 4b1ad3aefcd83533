//! The search box, sort choice and pager above and below a long list (customers,
//! a customer's devices): what they show and the links they make, keeping the
//! search and the sort while paging.

use crate::{
    error::{Error, Result},
    tr,
};

pub use mailbridge_core::store::ListSort;

/// The sort a list's `sort` parameter names (the name when none).
pub fn parse_sort(text: Option<&str>) -> Result<ListSort> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(ListSort::Name),
        Some(t) => ListSort::from_name(t).ok_or_else(|| Error::InvalidValue {
            text: tr!("{} is not a sort order (name, last_seen, queued, failures)."),
            value: t.to_owned(),
        }),
    }
}

/// What the list's search form and pager show.
#[derive(Debug, Clone)]
pub struct Pager {
    /// The path of the list (its query string is made here).
    pub path: String,
    /// The id of the element the links jump to (`#devices`), or empty.
    pub anchor: &'static str,
    pub q: String,
    pub sort: &'static str,
    /// `(value, label)` of each sort order.
    pub sorts: Vec<(&'static str, &'static str)>,
    pub total: i64,
    pub first: i64,
    pub last: i64,
    previous: Option<i64>,
    next: Option<i64>,
}

impl Pager {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        path: String,
        anchor: &'static str,
        q: Option<&str>,
        sort: &'static str,
        sorts: Vec<(&'static str, &'static str)>,
        total: i64,
        (first, last): (i64, i64),
        (previous, next): (Option<i64>, Option<i64>),
    ) -> Self {
        Self {
            path,
            anchor,
            q: q.map(str::trim).unwrap_or_default().to_owned(),
            sort,
            sorts,
            total,
            first,
            last,
            previous,
            next,
        }
    }

    fn link(&self, offset: i64) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if !self.q.is_empty() {
            query.append_pair("q", &self.q);
        }
        query.append_pair("sort", self.sort);
        if offset > 0 {
            query.append_pair("offset", &offset.to_string());
        }
        let anchor = if self.anchor.is_empty() {
            String::new()
        } else {
            format!("#{}", self.anchor)
        };
        format!("{}?{}{anchor}", self.path, query.finish())
    }

    pub fn previous_link(&self) -> Option<String> {
        self.previous.map(|o| self.link(o))
    }

    pub fn next_link(&self) -> Option<String> {
        self.next.map(|o| self.link(o))
    }

    /// Whether the list is long enough (or searched) to need the controls.
    pub fn shown(&self) -> bool {
        !self.q.is_empty() || self.total > 10 || self.previous.is_some()
    }
}
