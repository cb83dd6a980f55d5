//! Code generated from `proto/unio/v1` by `build.rs`, and the encoded
//! descriptor set that server reflection serves.

#[allow(clippy::all, clippy::pedantic)]
pub mod unio {
    pub mod v1 {
        tonic::include_proto!("unio.v1");
    }
}

pub use unio::v1 as pb;

/// Every `unio.v1` file, for grpcurl and other reflection clients.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/unio_descriptor.bin"));
