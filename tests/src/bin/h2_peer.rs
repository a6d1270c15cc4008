//! The plain HTTP/2 peer of the end-to-end tests: a hyper h2c server and two hyper h2c clients.
//!
//! ```text
//! h2-peer server PORT        serve on 127.0.0.1:PORT until killed:
//!                              POST /upload/<i>   checks the body is fixtures::h2_body(i, Request),
//!                                                 answers 200 with the small body (422 if wrong)
//!                              GET  /download/<i> answers 200 with the big body of stream i
//!                              GET  anything else answers 200 "path=<path?query>\n"
//! h2-peer load PORT N        N concurrent streams on one connection (fixtures::h2_path(i)),
//!                            every answer checked byte for byte; when all were right, print a
//!                            line, keep the connection until stdin ends, exit 0
//! h2-peer late PORT N        one connection: GET /early, print "early done", wait for a line on
//!                            stdin, then N GETs of fixtures::late_path(i) one after the other,
//!                            print "late done", wait for another line (or the end of stdin) and
//!                            exit; every request carries `x-session-marker: $H2_PEER_MARKER`
//! ```

use std::convert::Infallible;
use std::io::{BufRead, Write};
use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use capture_e2e::fixtures::{
    BodyDirection, echo_path_body, h2_body, h2_path, h2_uploads, late_path,
};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

/// More than the test's 128 streams, so all of them are open at once.
const MAX_CONCURRENT_STREAMS: u32 = 256;

async fn serve(port: u16) -> Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(handle);
            let result = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(err) = result {
                eprintln!("h2-peer server: connection error: {err}");
            }
        });
    }
}

/// `/upload/7?size=..` -> 7.
fn stream_index(path: &str, prefix: &str) -> Option<u32> {
    path.strip_prefix(prefix)?.parse().ok()
}

async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or_else(|| path.clone(), ToString::to_string);
    let reply = |status: StatusCode, content_type: &str, body: Vec<u8>| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        response
            .headers_mut()
            .insert("x-peer", http::HeaderValue::from_static("h2-peer"));
        response
    };
    if let Some(index) = stream_index(&path, "/upload/") {
        let body = match request.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(err) => {
                let message = format!("reading the body failed: {err}\n");
                return Ok(reply(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    message.into_bytes(),
                ));
            }
        };
        if body != h2_body(index, BodyDirection::Request) {
            let message = format!("upload {index}: wrong body ({} bytes)\n", body.len());
            return Ok(reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                "text/plain",
                message.into_bytes(),
            ));
        }
        return Ok(reply(
            StatusCode::OK,
            "text/plain",
            h2_body(index, BodyDirection::Response),
        ));
    }
    if let Some(index) = stream_index(&path, "/download/") {
        return Ok(reply(
            StatusCode::OK,
            "application/octet-stream",
            h2_body(index, BodyDirection::Response),
        ));
    }
    Ok(reply(
        StatusCode::OK,
        "text/plain",
        echo_path_body(&path_and_query).into_bytes(),
    ))
}

/// One h2c connection to 127.0.0.1:`port` (prior knowledge).
async fn connect(port: u16) -> Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .context("HTTP/2 handshake")?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            eprintln!("h2-peer client: connection error: {err}");
        }
    });
    Ok(sender)
}

/// Sends `request`, returns status and whole body.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes)> {
    sender.ready().await.context("connection closed")?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

async fn load(port: u16, streams: u32) -> Result<()> {
    let sender = connect(port).await?;
    let mut tasks = Vec::new();
    for index in 0..streams {
        let mut sender = sender.clone();
        let uri = format!("http://127.0.0.1:{port}{}", h2_path(index));
        tasks.push(tokio::spawn(async move {
            let builder = Request::builder()
                .uri(uri)
                .header("x-stream", index.to_string());
            let request = if h2_uploads(index) {
                builder
                    .method(Method::POST)
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .body(Full::new(Bytes::from(h2_body(
                        index,
                        BodyDirection::Request,
                    ))))?
            } else {
                builder.method(Method::GET).body(Full::new(Bytes::new()))?
            };
            let (status, body) = exchange(&mut sender, request).await?;
            ensure!(
                status == StatusCode::OK,
                "stream {index}: status {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            );
            ensure!(
                body == h2_body(index, BodyDirection::Response),
                "stream {index}: wrong response body ({} bytes)",
                body.len()
            );
            Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    println!("h2-peer load: {streams} streams answered as expected");
    hold_until_stdin_ends().await
}

async fn late(port: u16, count: u32) -> Result<()> {
    let marker = std::env::var("H2_PEER_MARKER").context("H2_PEER_MARKER is not set")?;
    let mut sender = connect(port).await?;
    let get = |path: &str| {
        Request::builder()
            .uri(format!("http://127.0.0.1:{port}{path}"))
            .header("x-session-marker", marker.as_str())
            .header(header::USER_AGENT, "h2-peer-late/1")
            .body(Full::new(Bytes::new()))
    };
    let (status, body) = exchange(&mut sender, get("/early")?).await?;
    ensure!(
        status == StatusCode::OK && body == echo_path_body("/early"),
        "/early: {status}"
    );
    println!("early done");
    std::io::stdout().flush()?;
    let mut line = String::new();
    tokio::task::spawn_blocking(move || std::io::stdin().lock().read_line(&mut line)).await??;
    for index in 0..count {
        let path = late_path(index);
        let (status, body) = exchange(&mut sender, get(&path)?).await?;
        ensure!(
            status == StatusCode::OK && body == echo_path_body(&path),
            "{path}: {status} {:?}",
            String::from_utf8_lossy(&body)
        );
    }
    println!("late done");
    std::io::stdout().flush()?;
    // Keep the connection open until told (or stdin closes), so the test decides whether the
    // daemon sees it open or already closed.
    tokio::task::spawn_blocking(|| std::io::stdin().lock().read_line(&mut String::new())).await??;
    drop(sender);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |s: &String| {
        s.parse::<u32>()
            .with_context(|| format!("bad number {s:?}"))
    };
    let port = |s: &String| s.parse::<u16>().with_context(|| format!("bad port {s:?}"));
    match args.as_slice() {
        [mode, p] if mode == "server" => serve(port(p)?).await,
        [mode, p, n] if mode == "load" => load(port(p)?, number(n)?).await,
        [mode, p, n] if mode == "late" => late(port(p)?, number(n)?).await,
        _ => bail!("usage: h2-peer server PORT | h2-peer load PORT STREAMS | h2-peer late PORT N"),
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
