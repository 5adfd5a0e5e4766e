//! Writing remote-backend replies: JSON straight into a reused buffer.

use std::io::Write;

/// `{"result":false}`: nothing here, PowerDNS asks the next backend.
pub const FALSE: &[u8] = br#"{"result":false}"#;
/// `{"result":true}`.
pub const TRUE: &[u8] = br#"{"result":true}"#;
/// `{"result":[]}`.
pub const EMPTY: &[u8] = br#"{"result":[]}"#;
/// `{"result":{}}`: no metadata.
pub const EMPTY_OBJECT: &[u8] = br#"{"result":{}}"#;

/// A reply with a message PowerDNS logs (`log`), for requests we refuse.
pub fn error(out: &mut Vec<u8>, message: &str) {
    out.clear();
    let body = serde_json::json!({ "result": false, "log": [format!("geolb: {message}")] });
    // Writing a `Value` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &body);
}

/// Writes a record list incrementally: `{"result":[rec,rec,…]}`.
pub struct RecordWriter<'o> {
    out: &'o mut Vec<u8>,
    count: usize,
}

impl<'o> RecordWriter<'o> {
    /// Starts a list in `out` (cleared).
    pub fn new(out: &'o mut Vec<u8>) -> Self {
        out.clear();
        out.extend_from_slice(br#"{"result":["#);
        RecordWriter { out, count: 0 }
    }

    fn sep(&mut self) {
        if self.count > 0 {
            self.out.push(b',');
        }
        self.count += 1;
    }

    /// Appends a pre-rendered record object.
    pub fn raw(&mut self, json: &[u8]) {
        self.sep();
        self.out.extend_from_slice(json);
    }

    /// Appends an address record. `qname_json` is the name already JSON-quoted; `addr` is an
    /// IP address in presentation format (nothing to escape).
    pub fn address(&mut self, qtype: &str, qname_json: &str, addr: &str, ttl: u32, scope: u8) {
        self.sep();
        // Writes into a Vec cannot fail.
        let _ = write!(
            self.out,
            r#"{{"qtype":"{qtype}","qname":{qname_json},"content":"{addr}","ttl":{ttl},"auth":true,"scopeMask":{scope}}}"#
        );
    }

    /// Records written so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Closes the list; with no record, rewrites the reply as `{"result":false}`.
    pub fn finish(self) {
        if self.count == 0 {
            self.out.clear();
            self.out.extend_from_slice(FALSE);
        } else {
            self.out.extend_from_slice(b"]}");
        }
    }
}

/// A record as PowerDNS reads it, in the field order geolb writes address records in.
#[derive(serde::Serialize)]
struct Record<'a> {
    qtype: &'a str,
    qname: &'a str,
    content: &'a str,
    ttl: u32,
    auth: bool,
    #[serde(rename = "scopeMask")]
    scope_mask: u8,
}

/// Renders one static record as a JSON object (done once per zone load, not per query).
pub fn static_record(qname: &str, qtype: &str, content: &str, ttl: u32) -> Box<[u8]> {
    let record = Record { qtype, qname, content, ttl, auth: true, scope_mask: 0 };
    // Serializing plain strings and numbers into a Vec cannot fail.
    serde_json::to_vec(&record).unwrap_or_default().into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_list_is_valid_json() {
        let mut out = Vec::new();
        let mut w = RecordWriter::new(&mut out);
        w.address("A", "\"cdn.example.net.\"", "192.0.2.1", 30, 24);
        w.raw(&static_record("cdn.example.net.", "TXT", "\"v=spf1 mx -all\"", 300));
        w.finish();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["result"][0]["content"], "192.0.2.1");
        assert_eq!(v["result"][0]["ttl"], 30);
        assert_eq!(v["result"][0]["scopeMask"], 24);
        assert_eq!(v["result"][1]["content"], "\"v=spf1 mx -all\"");
        assert_eq!(v["result"][1]["scopeMask"], 0);
    }

    #[test]
    fn empty_list_is_false() {
        let mut out = b"junk".to_vec();
        RecordWriter::new(&mut out).finish();
        assert_eq!(out, FALSE);
    }
}
