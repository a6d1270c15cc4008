//! Property tests: however the captured bytes are cut into reads, the decoder produces the
//! same exchanges, and it never panics on arbitrary bytes.

use proptest::prelude::*;

use super::frame::{
    CONTINUATION, DATA, FLAG_END_HEADERS, FLAG_END_STREAM, FLAG_PADDED, HEADERS, write_frame,
};
use super::testing::{self, Wire, get, refs};
use super::*;

/// A connection in capture order: (side, bytes written at once).
fn conversation() -> Vec<(Side, Vec<u8>)> {
    let mut w = Wire::new();
    let mut events = Vec::new();
    let take = |w: &mut Wire, events: &mut Vec<(Side, Vec<u8>)>| {
        if !w.client.is_empty() {
            events.push((Side::Request, std::mem::take(&mut w.client)));
        }
        if !w.server.is_empty() {
            events.push((Side::Response, std::mem::take(&mut w.server)));
        }
    };
    take(&mut w, &mut events);
    for round in 0..3u32 {
        let ids: Vec<u32> = (0..4).map(|i| 1 + 2 * (4 * round + i)).collect();
        for &id in &ids {
            let mut fields = get(&format!("/r{round}/{id}"));
            fields.push(("x-round", round.to_string()));
            if id % 3 == 0 {
                // A block in three frames.
                let block = Wire::block(&mut w.client_enc, &refs(&fields));
                let third = block.len() / 3;
                write_frame(&mut w.client, HEADERS, 0, id, &block[..third]);
                write_frame(&mut w.client, CONTINUATION, 0, id, &block[third..2 * third]);
                write_frame(
                    &mut w.client,
                    CONTINUATION,
                    FLAG_END_HEADERS,
                    id,
                    &block[2 * third..],
                );
            } else {
                w.request(id, &refs(&fields), false);
            }
            let mut padded = vec![4u8];
            padded.extend_from_slice(format!("body-{id}").as_bytes());
            padded.extend_from_slice(&[0; 4]);
            write_frame(
                &mut w.client,
                DATA,
                FLAG_PADDED | FLAG_END_STREAM,
                id,
                &padded,
            );
        }
        take(&mut w, &mut events);
        for &id in ids.iter().rev() {
            w.response(
                id,
                &[(":status", "200"), ("content-type", "application/grpc")],
                false,
            );
            let mut msg = vec![0u8, 0, 0, 0, 6];
            msg.extend_from_slice(format!("m{id:05}").as_bytes());
            w.server_data(id, &msg[..4], false);
            w.server_data(id, &msg[4..], false);
            w.response(id, &[("grpc-status", "0")], true);
        }
        take(&mut w, &mut events);
    }
    events
}

fn feed(events: &[(Side, Vec<u8>)], cuts: &[usize]) -> Vec<Http2Output> {
    let mut c = Http2Conn::new(Http2Limits::default());
    let mut out = Vec::new();
    let mut cuts = cuts.iter().cycle();
    for (side, bytes) in events {
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            let n = cuts.next().map_or(rest.len(), |&c| 1 + c % rest.len());
            c.on_data(*side, &rest[..n], 7, &mut out);
            rest = &rest[n..];
        }
    }
    c.on_close(8, &mut out);
    out
}

/// Feeds `events` cut at `cuts` as a connection joined mid-way with its sides unknown: held
/// by an [`Undecided`] until it tells the sides, then decoded. Returns who it found sent the
/// first event's direction, and the outputs.
fn feed_undecided(
    events: &[(Side, Vec<u8>)],
    cuts: &[usize],
) -> (Option<Sender>, Vec<Http2Output>) {
    let first_side = events[0].0;
    let mut held = Some(Undecided::new(Http2Limits::default()));
    let mut decided = None;
    let mut conn: Option<Http2Conn> = None;
    let mut out = Vec::new();
    for (side, piece) in pieces(events, cuts) {
        if let Some(c) = &mut conn {
            c.on_data(side, piece, 7, &mut out);
        } else if let Some(u) = &mut held {
            u.on_data(side == first_side, piece, 0, 7, usize::MAX);
            if let Some(sender) = u.first_sender()
                && let Some(u) = held.take()
            {
                decided = Some(sender);
                conn = Some(u.decode(sender, &mut out));
            }
        }
    }
    if let Some(c) = &mut conn {
        c.on_close(8, &mut out);
    }
    (decided, out)
}

/// `events` cut at `cuts`, in order.
fn pieces<'a>(events: &'a [(Side, Vec<u8>)], cuts: &[usize]) -> Vec<(Side, &'a [u8])> {
    let mut out = Vec::new();
    let mut cuts = cuts.iter().cycle();
    for (side, bytes) in events {
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            let n = cuts.next().map_or(rest.len(), |&c| 1 + c % rest.len());
            out.push((*side, &rest[..n]));
            rest = &rest[n..];
        }
    }
    out
}

proptest! {
    /// A connection joined mid-way with the sides unknown, from a client write or a server
    /// write, cut anywhere: the sides are found, and the exchanges are those of a decoder that
    /// knew them.
    #[test]
    fn undecided_sides_are_found_and_decoded_as_known(
        cuts in prop::collection::vec(0usize..5000, 0..40),
        from in 2usize..5,
    ) {
        let events = conversation();
        let joined = &events[from..];
        let first_side = joined[0].0;
        let (sender, got) = feed_undecided(joined, &cuts);
        let want_sender = match first_side {
            Side::Request => Sender::Client,
            Side::Response => Sender::Server,
        };
        prop_assert_eq!(sender, Some(want_sender));
        let mut direct = Http2Conn::mid_stream(Http2Limits::default(), first_side);
        let mut want = Vec::new();
        for (side, piece) in pieces(joined, &cuts) {
            direct.on_data(side, piece, 7, &mut want);
        }
        direct.on_close(8, &mut want);
        prop_assert!(!testing::exchanges(&want).is_empty());
        prop_assert_eq!(got, want);
    }

    #[test]
    fn any_chunking_gives_the_same_exchanges(cuts in prop::collection::vec(0usize..5000, 1..40)) {
        let events = conversation();
        let want = feed(&events, &[]);
        prop_assert_eq!(testing::exchanges(&want).len(), 12);
        let got = feed(&events, &cuts);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        client in prop::collection::vec(any::<u8>(), 0..600),
        server in prop::collection::vec(any::<u8>(), 0..600),
        gap in 0u64..50,
        mid in any::<bool>(),
    ) {
        let limits = Http2Limits {
            max_header_list_bytes: 256,
            max_streams: 3,
            max_hpack_table_bytes: 128,
            max_body_bytes: 64,
            max_conn_body_bytes: 100,
        };
        let mut c = if mid {
            Http2Conn::mid_stream(limits, Side::Request)
        } else {
            Http2Conn::new(limits)
        };
        let mut out = Vec::new();
        let mut with_preface = PREFACE.to_vec();
        with_preface.extend_from_slice(&client);
        c.on_data(Side::Request, &with_preface, 1, &mut out);
        c.on_data(Side::Response, &server, 2, &mut out);
        c.on_gap(Side::Response, gap, 3, &mut out);
        c.on_data(Side::Response, &server, 4, &mut out);
        c.on_close(5, &mut out);
        prop_assert_eq!(c.open_streams(), 0);
    }
}
