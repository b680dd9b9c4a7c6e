//! The cluster's wire contract, what both ends of a connection must agree on: the gRPC
//! services (generated from `proto/cluster.proto`: `Workers`, what workers call on the
//! coordinator, and `Batches`, what clients call), the Flight upload format of job results
//! (`upload`), and the HTTP/2 settings of every connection (`transport`).

pub mod auth;
pub mod leader;
pub mod members;
pub mod tls;
pub mod transport;
pub mod upload;

tonic::include_proto!("xt.v1");

/// A client's text quoted in an error, cut to its first 64 characters: an error answers a
/// request, it does not echo a 100 KB ticket back.
pub fn excerpt(text: &str) -> String {
    const SHOWN: usize = 64;
    match text.char_indices().nth(SHOWN) {
        None => format!("{text:?}"),
        Some((at, _)) => format!("{:?}… ({} bytes)", &text[..at], text.len()),
    }
}

#[cfg(test)]
mod excerpt_tests {
    #[test]
    fn long_text_is_cut() {
        assert_eq!(super::excerpt("7/metrics"), "\"7/metrics\"");
        let long = "x".repeat(100_000);
        let e = super::excerpt(&long);
        assert_eq!(e, format!("{:?}… (100000 bytes)", "x".repeat(64)));
    }
}
