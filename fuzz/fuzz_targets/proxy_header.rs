//! PROXY protocol v1/v2 headers as the edge reads them
//! (`ferry_dataplane::proxy::ProxyPolicy::accept`): the first byte decides
//! whether a header is there, the policy decides what to do for the peer,
//! and `ProxiedStream::create_from_tokio` with the default `ParseConfig`
//! reads the header. Input: byte 0 picks the mode (`common.proxy_protocol`,
//! 3 is invalid), byte 1 the peer, the rest is what the connection sends. A
//! header that parses encodes as v2 and parses back the same.
#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;

use ferry_dataplane::proxy::{Decision, ProxySettings};
use libfuzzer_sys::fuzz_target;
use proxy_header::io::ProxiedStream;
use proxy_header::{ParseConfig, ProxyHeader};

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
});

const PEERS: &[&str] = &[
    "10.1.2.3",
    "127.0.0.1",
    "192.0.2.7",
    "::1",
    "::ffff:10.0.0.1",
    "2001:db8::1",
];

fuzz_target!(|data: &[u8]| {
    let [mode, peer, stream @ ..] = data else {
        return;
    };
    let settings = ProxySettings {
        proxy_protocol: mode % 4,
        proxy_allowed: vec!["10.0.0.0/8".into(), " ::1 ".into(), String::new()],
        proxy_skipped: vec!["127.0.0.1".into()],
    };
    let Ok(policy) = settings.policy() else {
        assert_eq!(mode % 4, 3);
        return;
    };
    let ip: IpAddr = PEERS[usize::from(*peer) % PEERS.len()].parse().unwrap();
    let peer = SocketAddr::new(ip, 40000);
    let has_header = matches!(stream.first(), Some(b'P' | b'\r'));
    let honour = match policy.decide(peer.ip(), has_header) {
        Decision::Plain | Decision::Reject(_) => None,
        Decision::ReadHeader { honour } => Some(honour),
    };

    // What `accept` does once the decision is to read a header.
    let read = RUNTIME.block_on(ProxiedStream::create_from_tokio(
        stream,
        ParseConfig::default(),
    ));
    if let (Some(honour), Ok(proxied)) = (honour, &read) {
        let client = match (honour, proxied.proxy_header().proxied_address()) {
            (true, Some(a)) => a.source,
            _ => peer,
        };
        let _ = client.to_string();
    }

    // The parser on its own: what the reader took, the whole input gives
    // too; consumed bytes lie within the input; a v2 encoding of the header
    // parses back to the same header. (The converse does not hold: a v1
    // `UNKNOWN` line longer than v1's 107 bytes is taken when it arrives in
    // one read, refused when split; harmless here, it carries no address.)
    let parsed = ProxyHeader::parse(stream, ParseConfig::default());
    if let Ok(proxied) = &read {
        let (header, _) = parsed
            .as_ref()
            .expect("the parser refused what the reader took");
        assert_eq!(proxied.proxy_header(), header);
    }
    if let Ok((header, consumed)) = parsed {
        assert!(consumed > 0 && consumed <= stream.len());
        for tlv in header.tlvs() {
            let _ = tlv;
        }
        let mut v2 = Vec::new();
        if header.encode_v2(&mut v2).is_ok() {
            let (again, used) = ProxyHeader::parse(&v2, ParseConfig::default())
                .unwrap_or_else(|e| panic!("v2 encoding of {header:?} does not parse: {e}"));
            assert_eq!(used, v2.len());
            assert_eq!(again, header, "v2 round trip");
        }
    }
});
