//! vmlab's mark on the domains it creates: a metadata element in its own
//! namespace. Anything without it is foreign and never touched.
//!
//! The mark names the lab and home that created the domain, and carries the
//! VM's settings as further attributes, so a lab can be rebuilt from libvirt
//! alone when its state file is lost.

use std::collections::BTreeMap;

use roxmltree::Document;

pub const NAMESPACE: &str = "https://vmlab.dev/xmlns/owner/1";

/// What vmlab wrote into a domain's metadata.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mark {
    pub lab: String,
    /// The vmlab home, as spelled when the domain was defined.
    pub home: String,
    /// The VM's settings (`image`, `ssh_port`, …), as text.
    pub attrs: BTreeMap<String, String>,
}

impl Mark {
    /// Parses the metadata element libvirt returns for [`NAMESPACE`].
    pub fn parse(xml: &str) -> Option<Mark> {
        let doc = Document::parse(xml).ok()?;
        let el = doc.root_element();
        if el.tag_name().name() != "owner" {
            return None;
        }
        let mut attrs: BTreeMap<String, String> = el
            .attributes()
            .map(|a| (a.name().to_string(), a.value().to_string()))
            .collect();
        Some(Mark {
            lab: attrs.remove("lab").unwrap_or_default(),
            home: attrs.remove("home").unwrap_or_default(),
            attrs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libvirts_metadata_answer() {
        let xml = r#"<owner xmlns="https://vmlab.dev/xmlns/owner/1" lab="default" home="/var/a&amp;b" ssh_port="40022"/>"#;
        assert_eq!(
            Mark::parse(xml),
            Some(Mark {
                lab: "default".into(),
                home: "/var/a&b".into(),
                attrs: BTreeMap::from([("ssh_port".into(), "40022".into())]),
            })
        );
        assert_eq!(Mark::parse("<other/>"), None);
        assert_eq!(Mark::parse("not xml"), None);
    }
}
