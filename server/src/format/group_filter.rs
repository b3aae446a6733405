//! PBS's group filters (`type:`, `group:`, `regex:`, each optionally after `exclude:`), used
//! by prune and sync jobs to pick backup groups. Pure: no I/O.

use regex::Regex;

use super::names::{BackupGroup, BackupType};

/// A PBS group filter: `type:<vm|ct|host>`, `group:<type>/<id>`, `regex:<re>` (matched
/// against `<type>/<id>`), each optionally prefixed with `exclude:`.
#[derive(Clone, Debug)]
pub struct GroupFilter {
    exclude: bool,
    rule: Rule,
}

#[derive(Clone, Debug)]
enum Rule {
    Type(BackupType),
    Group(String),
    Regex(Regex),
}

impl GroupFilter {
    /// Parse one filter; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (exclude, rest) = match text.strip_prefix("exclude:") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let rule = match rest.split_once(':') {
            Some(("type", ty)) => Rule::Type(
                ty.parse()
                    .map_err(|_| format!("'{ty}' is not a backup type (vm, ct, host)"))?,
            ),
            Some(("group", group)) => {
                let (ty, id) = group
                    .split_once('/')
                    .ok_or_else(|| format!("'{group}' is not a group like vm/100"))?;
                let ty: BackupType = ty
                    .parse()
                    .map_err(|_| format!("'{ty}' is not a backup type (vm, ct, host)"))?;
                let group = BackupGroup::new(ty, id).map_err(|e| format!("'{group}': {e}"))?;
                Rule::Group(group.path())
            }
            Some(("regex", re)) => {
                Rule::Regex(Regex::new(re).map_err(|e| format!("bad regex '{re}': {e}"))?)
            }
            _ => {
                return Err(format!(
                "'{text}' is not a group filter (type:, group:, regex:, optionally after exclude:)"
            ))
            }
        };
        Ok(GroupFilter { exclude, rule })
    }

    fn matches(&self, group: &BackupGroup) -> bool {
        match &self.rule {
            Rule::Type(ty) => group.ty == *ty,
            Rule::Group(path) => group.path() == *path,
            Rule::Regex(re) => re.is_match(&group.path()),
        }
    }
}

/// PBS's rule: with include filters a group must match one of them; it must match no exclude
/// filter. No filters: every group.
pub fn group_selected(filters: &[GroupFilter], group: &BackupGroup) -> bool {
    let mut includes = filters.iter().filter(|f| !f.exclude).peekable();
    let included = includes.peek().is_none() || includes.any(|f| f.matches(group));
    included && !filters.iter().any(|f| f.exclude && f.matches(group))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(ty: BackupType, id: &str) -> BackupGroup {
        BackupGroup::new(ty, id).unwrap()
    }

    fn filters(list: &[&str]) -> Vec<GroupFilter> {
        list.iter()
            .map(|f| GroupFilter::parse(f).unwrap())
            .collect()
    }

    #[test]
    fn group_filters_select_like_pbs() {
        let vm100 = g(BackupType::Vm, "100");
        let vm200 = g(BackupType::Vm, "200");
        let ct100 = g(BackupType::Ct, "100");
        let host = g(BackupType::Host, "web-1");
        let all = [&vm100, &vm200, &ct100, &host];
        let picked = |list: &[&str]| -> Vec<String> {
            let f = filters(list);
            all.iter()
                .filter(|grp| group_selected(&f, grp))
                .map(|grp| grp.path())
                .collect()
        };
        assert_eq!(picked(&[]), ["vm/100", "vm/200", "ct/100", "host/web-1"]);
        assert_eq!(picked(&["type:vm"]), ["vm/100", "vm/200"]);
        assert_eq!(picked(&["group:vm/100", "type:ct"]), ["vm/100", "ct/100"]);
        assert_eq!(picked(&["regex:^(ct|host)/"]), ["ct/100", "host/web-1"]);
        assert_eq!(picked(&["exclude:type:vm"]), ["ct/100", "host/web-1"]);
        assert_eq!(picked(&["type:vm", "exclude:group:vm/200"]), ["vm/100"]);
        assert_eq!(picked(&["regex:100$", "exclude:regex:^ct"]), ["vm/100"]);
    }

    #[test]
    fn bad_filters_are_refused() {
        for bad in [
            "vm/100",
            "type:disk",
            "group:vm",
            "group:xx/1",
            "regex:(",
            "exclude:",
        ] {
            assert!(GroupFilter::parse(bad).is_err(), "{bad}");
        }
    }
}
