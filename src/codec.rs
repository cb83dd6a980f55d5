//! The protobuf codec of every UNIO service (wired in `build.rs`).
//!
//! Two differences from `tonic_prost::ProstCodec`:
//! - A message that does not decode (wrong wire types, truncated bytes) is
//!   the client's mistake: INVALID_ARGUMENT with a BadRequest, not the
//!   INTERNAL that tonic's codec answers.
//! - Smaller buffers (512 bytes instead of 8 KiB each way): a live room
//!   keeps thousands of mostly idle streams whose events (heartbeats,
//!   typing, media state, ICE candidates) fit in 512 bytes. Buffers grow
//!   for a larger message and, with the patched tonic
//!   (`vendor/tonic/UNIO-PATCH.md`), are given back while the stream idles.

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

use crate::error::AppError;

const BUFFER_SIZE: usize = 512;
const YIELD_THRESHOLD: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

#[derive(Debug, Clone, Copy)]
pub struct UnioCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for UnioCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for UnioCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = UnioEncoder<T>;
    type Decoder = UnioDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        UnioEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        UnioDecoder(PhantomData)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct UnioEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for UnioEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // EncodeBuf grows on demand, so encoding cannot run out of space.
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding a response: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        settings()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct UnioDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for UnioDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(src).map(Some).map_err(|e| {
            AppError::invalid(
                "request",
                format!("is not a valid protobuf message of the expected type: {e}"),
            )
            .into()
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        settings()
    }
}
