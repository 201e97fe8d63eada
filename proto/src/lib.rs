//! kube-lite's API: the generated protobuf types and gRPC services (`v1`), and the
//! pure helpers every component shares (label selectors, object keys).

pub mod labels;

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("kubelite.v1");
}

/// Encoded `FileDescriptorSet` of the API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("kubelite_descriptor");

pub use v1::*;
