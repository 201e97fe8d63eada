//! Raw gRPC calls: any bytes as the request body of any method, the answer's bytes
//! back (for hostile-input tests that send what no generated client would).

use prost::bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// A codec whose messages are their encoded bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// A client for raw calls over `channel`.
#[derive(Clone)]
pub struct RawClient(tonic::client::Grpc<Channel>);

impl RawClient {
    pub fn new(channel: Channel) -> RawClient {
        RawClient(
            tonic::client::Grpc::new(channel)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
        )
    }

    /// Unary call of `path` (`/kubelite.v1.PodApi/Create`) with `body`.
    pub async fn unary(&mut self, path: &str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
        let path: PathAndQuery = path.parse().expect("path");
        self.0
            .ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        self.0
            .unary(Request::new(body), path, RawCodec)
            .await
            .map(|r| r.into_inner())
    }

    /// Server-streaming call: `Ok` once the stream is open (the stream is dropped).
    pub async fn open_stream(&mut self, path: &str, body: Vec<u8>) -> Result<(), Status> {
        let path: PathAndQuery = path.parse().expect("path");
        self.0
            .ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        self.0
            .server_streaming(Request::new(body), path, RawCodec)
            .await
            .map(|_| ())
    }
}
