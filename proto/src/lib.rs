//! Ferry's shared vocabulary: the gRPC contract between control plane and edges
//! (`edge::v1`, generated from `ferry/edge/v1/edge.proto`), the permission engine
//! both planes evaluate, the checks of object-storage settings, virtual-path
//! cleaning, and the one error-code enum.
#![forbid(unsafe_code)]

pub mod error;
pub mod filters;
pub mod pattern;
pub mod permissions;
pub mod storage;
pub mod vpath;

/// Generated code of the `ferry.edge.v1` package.
pub mod edge {
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("ferry.edge.v1");
    }
}

/// The crate version both binaries report.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// gRPC metadata key carrying the edge token.
pub const AUTHORIZATION: &str = "authorization";
