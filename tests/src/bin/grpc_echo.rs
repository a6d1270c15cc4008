//! The gRPC peer of the HTTP/2 end-to-end tests: a tonic server and a tonic client of the Echo
//! service (`proto/echo.proto`), over h2c on loopback.
//!
//! ```text
//! grpc-echo server PORT          serve Echo on 127.0.0.1:PORT until killed
//! grpc-echo client PORT          make the scripted calls (fixtures::grpc_script) on one
//!                                connection, check every answer, print a line when all were
//!                                right, keep the connection until stdin ends, exit 0
//! ```
//! The client sends `authorization: Bearer $GRPC_ECHO_TOKEN` and `cookie: session=$GRPC_ECHO_COOKIE`
//! with every call, so the tests can check that the daemon redacts them.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;

use anyhow::{Context, Result, bail, ensure};
use capture_e2e::fixtures::echo::echo_client::EchoClient;
use capture_e2e::fixtures::echo::echo_server::{Echo, EchoServer};
use capture_e2e::fixtures::echo::{EchoReply, EchoRequest};
use capture_e2e::fixtures::{
    collect_reply, count_replies, fail_message, grpc_script, gzip_text, say_reply,
};
use tokio_stream::{Stream, StreamExt};
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status, Streaming};

#[derive(Debug, Default)]
struct EchoService;

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn say(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        Ok(Response::new(EchoReply {
            text: say_reply(&request.into_inner().text),
            index: 0,
        }))
    }

    type CountStream = ReplyStream;

    async fn count(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<Self::CountStream>, Status> {
        let request = request.into_inner();
        let replies = count_replies(&request.text, request.count)
            .into_iter()
            .zip(0..)
            .map(|(text, index)| Ok(EchoReply { text, index }));
        Ok(Response::new(Box::pin(tokio_stream::iter(replies))))
    }

    async fn collect(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoReply>, Status> {
        let mut stream = request.into_inner();
        let mut texts = Vec::new();
        while let Some(message) = stream.message().await? {
            texts.push(message.text);
        }
        Ok(Response::new(EchoReply {
            text: collect_reply(&texts),
            index: u32::try_from(texts.len()).unwrap_or(u32::MAX),
        }))
    }

    async fn fail(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        Err(Status::not_found(fail_message(&request.into_inner().text)))
    }
}

async fn serve(port: u16) -> Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // The server compresses replies only for clients that accept gzip (grpc-accept-encoding).
    let service = EchoServer::new(EchoService)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    Server::builder()
        .add_service(service)
        .serve(addr)
        .await
        .with_context(|| format!("serving on {addr}"))
}

/// Credentials sent with every call, from the environment.
struct Credentials {
    authorization: MetadataValue<tonic::metadata::Ascii>,
    cookie: MetadataValue<tonic::metadata::Ascii>,
}

impl Credentials {
    fn from_env() -> Result<Self> {
        let token = std::env::var("GRPC_ECHO_TOKEN").context("GRPC_ECHO_TOKEN is not set")?;
        let cookie = std::env::var("GRPC_ECHO_COOKIE").context("GRPC_ECHO_COOKIE is not set")?;
        Ok(Self {
            authorization: format!("Bearer {token}").parse()?,
            cookie: format!("session={cookie}; theme=dark").parse()?,
        })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let metadata = request.metadata_mut();
        metadata.insert("authorization", self.authorization.clone());
        metadata.insert("cookie", self.cookie.clone());
        request
    }
}

async fn client(port: u16) -> Result<()> {
    let credentials = Credentials::from_env()?;
    // One channel, so one HTTP/2 connection, for every call.
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect()
        .await
        .context("connecting")?;
    let mut echo = EchoClient::new(channel.clone());

    let reply = echo
        .say(credentials.request(EchoRequest {
            text: grpc_script::SAY_TEXT.into(),
            count: 0,
        }))
        .await?
        .into_inner();
    ensure!(
        reply.text == say_reply(grpc_script::SAY_TEXT),
        "Say: {reply:?}"
    );

    let mut stream = echo
        .count(credentials.request(EchoRequest {
            text: grpc_script::COUNT_TEXT.into(),
            count: grpc_script::COUNT,
        }))
        .await?
        .into_inner();
    let mut texts = Vec::new();
    while let Some(reply) = stream.message().await? {
        texts.push(reply.text);
    }
    ensure!(
        texts == count_replies(grpc_script::COUNT_TEXT, grpc_script::COUNT),
        "Count: {texts:?}"
    );

    let sent = grpc_script::collect_texts();
    let outbound = tokio_stream::iter(sent.clone()).map(|text| EchoRequest { text, count: 0 });
    let reply = echo
        .collect(credentials.request(outbound))
        .await?
        .into_inner();
    ensure!(reply.text == collect_reply(&sent), "Collect: {reply:?}");

    match echo
        .fail(credentials.request(EchoRequest {
            text: grpc_script::FAIL_TEXT.into(),
            count: 0,
        }))
        .await
    {
        Ok(reply) => bail!("Fail succeeded: {reply:?}"),
        Err(status) => ensure!(
            status.code() == Code::NotFound
                && status.message() == fail_message(grpc_script::FAIL_TEXT),
            "Fail: {status:?}"
        ),
    }

    let mut compressed = EchoClient::new(channel)
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let text = gzip_text();
    let reply = compressed
        .say(credentials.request(EchoRequest {
            text: text.clone(),
            count: 0,
        }))
        .await?
        .into_inner();
    ensure!(reply.text == say_reply(&text), "gzip Say: {reply:?}");
    println!("grpc-echo client: 5 calls answered as expected");
    hold_until_stdin_ends().await
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = |s: &String| s.parse::<u16>().with_context(|| format!("bad port {s:?}"));
    match args.as_slice() {
        [mode, p] if mode == "server" => serve(port(p)?).await,
        [mode, p] if mode == "client" => client(port(p)?).await,
        _ => bail!("usage: grpc-echo server PORT | grpc-echo client PORT"),
    }
}

/// Keeps the process (and its connection) alive until stdin reaches its end, so a test can let
/// the daemon look the connection up in /proc before it closes; with stdin at /dev/null the
/// process exits at once.
async fn hold_until_stdin_ends() -> Result<()> {
    std::io::stdout().flush()?;
    tokio::task::spawn_blocking(|| {
        std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink())
    })
    .await??;
    Ok(())
}
