//! The gRPC codec of every Shoal service: prost messages, with small per-call buffers.
//!
//! tonic allocates an encoding and a decoding buffer for every call, 8 KiB each by default,
//! and keeps them as long as the call lasts. A manager holds several long-lived streams per
//! connected agent (session, heartbeats, assignments, log subscriptions), so those buffers
//! were most of its memory per agent. Our messages are small except Raft's and snapshots',
//! and a buffer grows to fit a larger message anyway: 1 KiB to start costs the rare big
//! message a few reallocations and saves every idle stream 14 KiB.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial size of a call's encoding and decoding buffers.
pub const BUFFER_BYTES: usize = 1024;
/// How much may be encoded before a streaming call yields (tonic's default).
pub const YIELD_THRESHOLD: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD)
}

/// [`ProstCodec`] with [`BUFFER_BYTES`] buffers; the generated clients and servers use it.
#[derive(Debug, Clone, Copy)]
pub struct ShoalCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ShoalCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for ShoalCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
