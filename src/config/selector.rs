//! Choosing sites: by id, by tags, or all of them. Used by the HTTP API's
//! sync and service routes and by `hubsync call`.

use std::collections::BTreeMap;

use super::{Config, Site};

/// Which sites a request means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SiteSelector {
    /// Every site of the inventory.
    All,
    /// These site ids, in this order (a repeated id counts once).
    Ids(Vec<String>),
    /// Sites having every one of these tag values (`id` matches the id).
    Tags(BTreeMap<String, String>),
}

impl Config {
    /// The sites `selector` names, in request order for ids and inventory
    /// order otherwise.
    ///
    /// Errors (one line, naming the bad id or tag): an unknown site id, a tag
    /// filter no site matches, an empty id list, an inventory without sites.
    pub fn select_sites(&self, selector: &SiteSelector) -> Result<Vec<&Site>, String> {
        match selector {
            SiteSelector::All => {
                if self.sites.is_empty() {
                    return Err("the config has no `[[site]]`".into());
                }
                Ok(self.sites.iter().collect())
            }
            SiteSelector::Ids(ids) => {
                if ids.is_empty() {
                    return Err("the site list is empty; name at least one site id".into());
                }
                let mut chosen: Vec<&Site> = Vec::new();
                for id in ids {
                    let site = self.site(id).ok_or_else(|| {
                        format!(
                            "unknown site `{id}`; known sites: {}",
                            known(self.sites.iter().map(|s| s.id.as_str()))
                        )
                    })?;
                    if !chosen.iter().any(|s| s.id == site.id) {
                        chosen.push(site);
                    }
                }
                Ok(chosen)
            }
            SiteSelector::Tags(tags) => {
                if tags.is_empty() {
                    return Err(
                        "the tag filter is empty; give at least one tag, e.g. `region=north`"
                            .into(),
                    );
                }
                let chosen: Vec<&Site> = self
                    .sites
                    .iter()
                    .filter(|site| {
                        tags.iter()
                            .all(|(tag, value)| site.attribute(tag) == Some(value.as_str()))
                    })
                    .collect();
                if chosen.is_empty() {
                    let wanted: Vec<String> =
                        tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    return Err(format!("no site has tags {}", wanted.join(", ")));
                }
                Ok(chosen)
            }
        }
    }
}

/// `a, b, c`, at most 20 names then `… and N more`.
fn known<'n>(names: impl Iterator<Item = &'n str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        return "none".into();
    }
    let listed = names[..names.len().min(20)].join(", ");
    match names.len().saturating_sub(20) {
        0 => listed,
        rest => format!("{listed} … and {rest} more"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config() -> Config {
        let text = r#"
            [master]
            url = "sqlite://m.db"
            [[site]]
            id = "a"
            url = "sqlite://a.db"
            tags = { region = "north", zone = "A" }
            [[site]]
            id = "b"
            url = "sqlite://b.db"
            tags = { region = "south", zone = "A" }
            [[site]]
            id = "c"
            url = "sqlite://c.db"
            tags = { region = "north", zone = "B" }
        "#;
        Config::parse(text, Path::new("h.toml"), Path::new("/cfg"), &|_| None).unwrap()
    }

    fn ids(sites: Vec<&Site>) -> Vec<&str> {
        sites.iter().map(|s| s.id.as_str()).collect()
    }

    #[test]
    fn sites_are_chosen_by_id_tags_or_all() {
        let config = config();
        let select = |selector| config.select_sites(&selector).map(ids);
        assert_eq!(select(SiteSelector::All), Ok(vec!["a", "b", "c"]));
        let by_id = SiteSelector::Ids(vec!["c".into(), "a".into(), "c".into()]);
        assert_eq!(select(by_id), Ok(vec!["c", "a"]));
        let tags = |pairs: &[(&str, &str)]| {
            SiteSelector::Tags(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        assert_eq!(select(tags(&[("region", "north")])), Ok(vec!["a", "c"]));
        assert_eq!(
            select(tags(&[("region", "north"), ("zone", "A")])),
            Ok(vec!["a"])
        );
        assert_eq!(select(tags(&[("id", "b")])), Ok(vec!["b"]));
        assert_eq!(
            select(tags(&[("region", "east")])),
            Err("no site has tags region=east".into())
        );
        assert_eq!(
            select(SiteSelector::Ids(vec!["z".into()])),
            Err("unknown site `z`; known sites: a, b, c".into())
        );
        assert_eq!(
            select(SiteSelector::Ids(vec![])),
            Err("the site list is empty; name at least one site id".into())
        );
    }
}
