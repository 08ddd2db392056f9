//! vmlab's mark on the domains it creates: a metadata element in its own
//! namespace. Anything without it is foreign and never touched.

use roxmltree::Document;

pub const NAMESPACE: &str = "https://vmlab.dev/xmlns/owner/1";

/// Which lab (in which vmlab home) created a domain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Owner {
    pub lab: String,
    pub home: String,
}

impl Owner {
    /// Parses the metadata element libvirt returns for [`NAMESPACE`].
    pub fn parse(xml: &str) -> Option<Owner> {
        let doc = Document::parse(xml).ok()?;
        let el = doc.root_element();
        (el.tag_name().name() == "owner").then(|| Owner {
            lab: el.attribute("lab").unwrap_or_default().to_string(),
            home: el.attribute("home").unwrap_or_default().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libvirts_metadata_answer() {
        let xml =
            r#"<owner xmlns="https://vmlab.dev/xmlns/owner/1" lab="default" home="/var/a&amp;b"/>"#;
        assert_eq!(
            Owner::parse(xml),
            Some(Owner {
                lab: "default".into(),
                home: "/var/a&b".into()
            })
        );
        assert_eq!(Owner::parse("<other/>"), None);
        assert_eq!(Owner::parse("not xml"), None);
    }
}
