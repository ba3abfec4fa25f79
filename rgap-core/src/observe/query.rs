//! The query of `/v1/members`: `group=ID` (one group), `limit=N` (a page of at most N
//! members) and `after=CURSOR` (the `next` of the page before), read into a
//! [`MembersQuery`]; a bad value is an error naming the parameter, for a 400.

use std::borrow::Cow;
use std::net::IpAddr;

use super::members::MAX_PAGE;

/// What a `/v1/members` request asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct MembersQuery {
    /// Only this group.
    pub group: Option<u64>,
    /// One page, or `None` for every member at once (refused past [`MAX_PAGE`]).
    pub page: Option<Page>,
}

/// One page of the members, in the reply's order (groups by id, members by address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Page {
    /// At most this many members (1 to [`MAX_PAGE`]).
    pub limit: usize,
    /// Start after this member; `None`: from the first.
    pub after: Option<Cursor>,
}

/// A place in the reply's order: the member `address` of group `group`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub group: u64,
    pub address: IpAddr,
}

impl Cursor {
    /// The `next` of a reply: the address alone when the request named its group, else
    /// `GROUP/ADDRESS`; [`MembersQuery::parse`] reads it back as `after`.
    pub fn to_text(self, one_group: bool) -> String {
        if one_group {
            self.address.to_string()
        } else {
            format!("{}/{}", self.group, self.address)
        }
    }
}

impl MembersQuery {
    /// Reads the query string (percent-decoded; parameters other than `group`, `limit` and
    /// `after` are ignored, as before paging existed; of a repeated one the first counts).
    pub fn parse(query: Option<&str>) -> Result<MembersQuery, String> {
        let query = query.unwrap_or_default();
        let value = |name: &str| -> Option<Cow<'_, str>> {
            form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == name).map(|(_, v)| v)
        };
        // An empty `group=` has always meant every group.
        let group =
            match value("group").filter(|v| !v.is_empty()) {
                None => None,
                Some(text) => Some(text.parse::<u64>().map_err(|_| {
                    format!("group: {text:?} is not a group id (0 to {})", u64::MAX)
                })?),
            };
        let limit = value("limit")
            .map(|text| match text.parse::<usize>() {
                Ok(n @ 1..=MAX_PAGE) => Ok(n),
                _ => {
                    Err(format!("limit: {text:?} is not a number of members from 1 to {MAX_PAGE}"))
                }
            })
            .transpose()?;
        let after = value("after")
            .map(|text| match group {
                Some(group) => text.parse().map(|address| Cursor { group, address }).map_err(|_| {
                    format!("after: {text:?} is not an address (give the `next` of the page before)")
                }),
                None => parse_cursor(&text).ok_or_else(|| {
                    format!(
                        "after: {text:?} is not GROUP/ADDRESS (give the `next` of the page before, or add group=ID to page one group by address)"
                    )
                }),
            })
            .transpose()?;
        let page = match (limit, after) {
            (None, None) => None,
            (limit, after) => Some(Page { limit: limit.unwrap_or(MAX_PAGE), after }),
        };
        Ok(MembersQuery { group, page })
    }
}

/// `GROUP/ADDRESS`.
fn parse_cursor(text: &str) -> Option<Cursor> {
    let (group, address) = text.split_once('/')?;
    Some(Cursor { group: group.parse().ok()?, address: address.parse().ok()? })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(limit: usize, after: Option<(u64, &str)>) -> Option<Page> {
        let after = after.map(|(group, ip)| Cursor { group, address: ip.parse().unwrap() });
        Some(Page { limit, after })
    }

    #[test]
    fn no_query_asks_for_everything_and_other_parameters_are_ignored() {
        assert_eq!(MembersQuery::parse(None), Ok(MembersQuery::default()));
        assert_eq!(MembersQuery::parse(Some("other=1&group=")), Ok(MembersQuery::default()));
        let only = MembersQuery::parse(Some("x=1&group=7&group=8")).unwrap();
        assert_eq!(only, MembersQuery { group: Some(7), page: None });
    }

    #[test]
    fn a_page_is_a_limit_and_a_cursor_read_back_from_next() {
        let first = MembersQuery::parse(Some("group=7&limit=100")).unwrap();
        assert_eq!(first.page, page(100, None));
        let v6 = MembersQuery::parse(Some("group=7&limit=5&after=2001%3Adb8%3A%3A1")).unwrap();
        assert_eq!(v6.page, page(5, Some((7, "2001:db8::1"))));
        let across = MembersQuery::parse(Some("limit=5&after=7/10.0.0.1")).unwrap();
        assert_eq!(across, MembersQuery { group: None, page: page(5, Some((7, "10.0.0.1"))) });
        // `after` alone pages with the largest limit.
        let default = MembersQuery::parse(Some("after=7%2F10.0.0.1")).unwrap();
        assert_eq!(default.page, page(MAX_PAGE, Some((7, "10.0.0.1"))));
        for (cursor, one_group) in [("10.0.0.1", true), ("7/::1", false)] {
            let query = if one_group {
                format!("group=7&after={cursor}")
            } else {
                format!("after={cursor}")
            };
            let after = MembersQuery::parse(Some(&query)).unwrap().page.unwrap().after.unwrap();
            assert_eq!(after.to_text(one_group), cursor);
        }
    }

    #[test]
    fn bad_values_name_their_parameter_and_what_is_wanted() {
        let error = |query: &str| MembersQuery::parse(Some(query)).unwrap_err();
        assert!(error("group=abc").starts_with("group: \"abc\" is not a group id"));
        for limit in ["0", "-1", "x", "", "10001"] {
            let message = error(&format!("group=1&limit={limit}"));
            assert!(message.starts_with(&format!("limit: {limit:?} is not")), "{message}");
            assert!(message.contains("1 to 10000"), "{message}");
        }
        assert!(error("group=1&after=1/10.0.0.1")
            .starts_with("after: \"1/10.0.0.1\" is not an address"));
        assert!(error("after=10.0.0.1").starts_with("after: \"10.0.0.1\" is not GROUP/ADDRESS"));
        assert!(error("after=x/10.0.0.1").contains("GROUP/ADDRESS"));
    }
}
