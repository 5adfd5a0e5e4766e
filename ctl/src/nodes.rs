//! `geolbctl nodes`: one node's change to the fleet document, and drains.
//!
//! A change is a read-modify-write: GET the newest document, change its `nodes`, PUT it with
//! `If-Match` of the version read. When someone else wrote in between (412) the change is made
//! again on their version, which is safe because it names one node: it applies the same way
//! to any version, or fails with a clear error when that node is gone or taken.
//! A drain is not in the document: it is `POST /api/v1/nodes/{id}/drain`, gossiped by the
//! member to every other.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use geolb_config::FleetDocument;
use serde_json::{Map, Value, json};

use crate::client::{ApiError, Client};

/// How many times a change is tried when others keep writing first.
const ATTEMPTS: u32 = 5;

/// A change to one node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Edit {
    /// A new node.
    Add {
        /// Its id, unique.
        id: String,
        /// Its PoP.
        pop: String,
        /// Its IPv4 address.
        ipv4: Option<Ipv4Addr>,
        /// Its IPv6 address.
        ipv6: Option<Ipv6Addr>,
        /// Its weight; `None` leaves the default.
        weight: Option<u32>,
    },
    /// A node's new weight.
    Weight {
        /// The node.
        id: String,
        /// The weight.
        weight: u32,
    },
    /// A node gone.
    Remove {
        /// The node.
        id: String,
    },
}

impl Edit {
    /// The message recorded when the user gives none.
    fn message(&self) -> String {
        match self {
            Edit::Add { id, pop, .. } => format!("add node {id} at PoP {pop}"),
            Edit::Weight { id, weight } => format!("set node {id} weight to {weight}"),
            Edit::Remove { id } => format!("remove node {id}"),
        }
    }

    /// Makes the change in `document`; whether it changed anything.
    fn apply(&self, document: &mut Map<String, Value>) -> Result<bool> {
        let nodes = document.entry("nodes").or_insert_with(|| Value::Array(Vec::new()));
        let Value::Array(nodes) = nodes else { bail!("the document's `nodes` is not an array") };
        let position = |id: &str| nodes.iter().position(|n| n.get("id").and_then(Value::as_str) == Some(id));
        match self {
            Edit::Add { id, pop, ipv4, ipv6, weight } => {
                if let Some(at) = position(id) {
                    let pop = nodes[at].get("pop").and_then(Value::as_str).unwrap_or("?");
                    bail!("node `{id}` already exists (at PoP `{pop}`): pick another id, or `nodes remove` it first");
                }
                let mut node = json!({ "id": id, "pop": pop });
                if let Some(a) = ipv4 {
                    node["ipv4"] = json!(a.to_string());
                }
                if let Some(a) = ipv6 {
                    node["ipv6"] = json!(a.to_string());
                }
                if let Some(w) = weight {
                    node["weight"] = json!(w);
                }
                nodes.push(node);
                Ok(true)
            }
            Edit::Weight { id, weight } => {
                let at = position(id).with_context(|| unknown(id))?;
                let Value::Object(node) = &mut nodes[at] else { bail!("node `{id}` is not a table") };
                let old = node.insert("weight".to_owned(), json!(weight));
                Ok(old != Some(json!(weight)))
            }
            Edit::Remove { id } => {
                let at = position(id).with_context(|| unknown(id))?;
                nodes.remove(at);
                Ok(true)
            }
        }
    }
}

fn unknown(id: &str) -> String {
    format!("unknown node `{id}`: the document has no node with that id")
}

/// Makes `edit` as the next version, again on a newer version when someone wrote first.
pub(crate) fn edit(client: &Client, edit: &Edit, message: Option<String>) -> Result<ExitCode> {
    let message = message.unwrap_or_else(|| edit.message());
    let mut attempt = 1;
    loop {
        let fetched = client.config(false)?.with_context(|| format!("{} has no fleet document yet", client.base()))?;
        let document = FleetDocument::from_json(fetched.text.as_bytes())
            .with_context(|| format!("{} served a document this geolbctl cannot read", client.base()))?;
        let Value::Object(mut tables) = document.to_value() else { bail!("the document is not an object") };
        let version = fetched.version;
        if !edit.apply(&mut tables)? {
            println!("version {version} already says so: nothing written");
            return Ok(ExitCode::SUCCESS);
        }
        let body = serde_json::to_vec(&tables)?;
        match client.put_config(version, &body, &message) {
            Ok(w) => {
                println!("{}", crate::config::wrote(&w, &message));
                return Ok(ExitCode::SUCCESS);
            }
            Err(e @ ApiError::Stale { .. }) if attempt < ATTEMPTS => {
                eprintln!("{e}; making the change again on it");
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Drains (or undrains) node `id`.
pub(crate) fn drain(client: &Client, id: &str, drained: bool) -> Result<ExitCode> {
    let answer = client.drain(id, drained)?;
    let at = answer["at_ms"].as_u64().map(crate::utc).unwrap_or_default();
    if drained {
        println!("node {id} drained at {at}: it leaves the answers on every member");
    } else {
        println!("node {id} undrained at {at}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> Map<String, Value> {
        let Value::Object(m) = json!({
            "pops": [{ "id": "fra" }],
            "nodes": [{ "id": "fra-1", "pop": "fra", "ipv4": "192.0.2.1" }, { "id": "fra-2", "pop": "fra", "ipv4": "192.0.2.2", "weight": 5 }],
        }) else {
            unreachable!()
        };
        m
    }

    #[test]
    fn add_weight_remove() {
        let mut d = document();
        let add = Edit::Add {
            id: "fra-3".into(),
            pop: "fra".into(),
            ipv4: Some(Ipv4Addr::new(192, 0, 2, 3)),
            ipv6: Some("2001:db8::3".parse().unwrap()),
            weight: Some(50),
        };
        assert!(add.apply(&mut d).unwrap());
        assert_eq!(
            d["nodes"][2],
            json!({ "id": "fra-3", "pop": "fra", "ipv4": "192.0.2.3", "ipv6": "2001:db8::3", "weight": 50 })
        );
        assert_eq!(add.message(), "add node fra-3 at PoP fra");
        let e = add.apply(&mut d).unwrap_err().to_string();
        assert_eq!(e, "node `fra-3` already exists (at PoP `fra`): pick another id, or `nodes remove` it first");

        assert!(Edit::Weight { id: "fra-1".into(), weight: 7 }.apply(&mut d).unwrap());
        assert_eq!(d["nodes"][0]["weight"], 7);
        assert!(!Edit::Weight { id: "fra-2".into(), weight: 5 }.apply(&mut d).unwrap(), "already 5");
        let e = Edit::Weight { id: "nope".into(), weight: 1 }.apply(&mut d).unwrap_err().to_string();
        assert_eq!(e, "unknown node `nope`: the document has no node with that id");

        assert!(Edit::Remove { id: "fra-2".into() }.apply(&mut d).unwrap());
        let ids: Vec<&str> = d["nodes"].as_array().unwrap().iter().filter_map(|n| n["id"].as_str()).collect();
        assert_eq!(ids, ["fra-1", "fra-3"]);
        assert!(Edit::Remove { id: "fra-2".into() }.apply(&mut d).is_err());
    }

    #[test]
    fn a_document_without_nodes_takes_its_first() {
        let mut d = Map::new();
        let add = Edit::Add { id: "a".into(), pop: "p".into(), ipv4: None, ipv6: None, weight: None };
        assert!(add.apply(&mut d).unwrap());
        assert_eq!(Value::Object(d), json!({ "nodes": [{ "id": "a", "pop": "p" }] }));
    }
}
