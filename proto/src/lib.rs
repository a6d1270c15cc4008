//! The `capture.v1` protobuf messages and gRPC services (`proto/capture/v1/capture.proto`):
//! what daemons push to the control plane, and what it streams back to watchers.

/// Package `capture.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("capture.v1");
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::v1;

    #[test]
    fn batch_round_trips_through_the_wire_form() {
        let batch = v1::ExchangeBatch {
            daemon_id: "node-a".into(),
            instance_id: "3f2a".into(),
            sequence: 7,
            exchanges: vec![v1::Exchange {
                protocol: v1::Protocol::Grpc as i32,
                request: Some(v1::Request {
                    method: "POST".into(),
                    target: "/shop.v1.Orders/Get".into(),
                    version: v1::HttpVersion::HttpVersion2 as i32,
                    headers: vec![v1::Header {
                        name: "content-type".into(),
                        value: "application/grpc".into(),
                    }],
                    body: Some(v1::Body {
                        data: vec![0, 0, 0, 0, 2, 8, 7],
                        wire_size: 7,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                grpc: Some(v1::Grpc {
                    service: "shop.v1.Orders".into(),
                    method: "Get".into(),
                    status: Some(0),
                    message: None,
                }),
                incomplete: None,
                ..Default::default()
            }],
        };
        let bytes = batch.encode_to_vec();
        let back = v1::ExchangeBatch::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, batch);
        // proto3 `optional` keeps presence: a status of 0 is not "no status".
        assert_eq!(back.exchanges[0].grpc.as_ref().unwrap().status, Some(0));
    }
}
