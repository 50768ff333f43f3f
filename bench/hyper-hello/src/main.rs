//! A bare hyper 1.x HTTP/1.1 server: the ceiling for Siesta's benchmark
//! scenarios on this machine.
//!
//! It serves the bench app's routes with no Python in between: `/upload`
//! hashes the request body with SHA-256 frame by frame as hyper hands it
//! over and answers `SIZE HEXDIGEST` (S2, S3, and the parked uploads of S8),
//! `/stream?mib=N` sends N MiB as 64 KiB blocks of one shared buffer with a
//! Content-Length (S4), and every other path answers `Hello, world!` (S1).
//! So the CPU it spends is what the network stack, hyper and the hash cost
//! on their own, and the memory it holds per connection is hyper's.
//!
//! It binds the given address (default `127.0.0.1:0`), prints Siesta's ready
//! line `Listening at: http://HOST:PORT (PID)` on stderr and exits on SIGTERM
//! or SIGINT. `--threads 1` (default) runs a current-thread tokio runtime,
//! `--threads N` a multi-thread runtime with N workers. `--max-buf-size N`
//! bounds hyper's read buffer (and with it how much of a body hyper reads
//! ahead, and its write queue) as Siesta's 64 KiB read-ahead does; without
//! it hyper's default (about 400 KiB) applies.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Request, Response};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

const HELLO: &[u8] = b"Hello, world!";
/// The bench app's block: `/stream` sends this buffer over and over.
const BLOCK_SIZE: usize = 64 * 1024;
static BLOCK: [u8; BLOCK_SIZE] = [b'x'; BLOCK_SIZE];
const MIB: u64 = 1024 * 1024;

/// Command-line settings: where to listen, how many runtime threads, and
/// hyper's read buffer bound.
struct Options {
    /// Address to bind; port 0 asks the kernel for a free port.
    bind: SocketAddr,
    /// 1 = current-thread runtime, more = multi-thread runtime.
    threads: usize,
    /// hyper's `max_buf_size`; `None` keeps hyper's default.
    max_buf_size: Option<usize>,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        threads: 1,
        max_buf_size: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "-b" | "--bind" => {
                options.bind = value.parse().map_err(|e| format!("--bind {value}: {e}"))?;
            }
            "--threads" => {
                options.threads = value
                    .parse()
                    .ok()
                    .filter(|n: &usize| *n >= 1)
                    .ok_or_else(|| format!("--threads {value}: need an integer >= 1"))?;
            }
            "--max-buf-size" => {
                // hyper refuses a bound below 8192 (its first read's size).
                options.max_buf_size = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|n: &usize| *n >= 8192)
                        .ok_or_else(|| format!("--max-buf-size {value}: need bytes >= 8192"))?,
                );
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(options)
}

/// `/stream`'s body: `left` more blocks of [`BLOCK`], each a `Bytes` over
/// the same static buffer (no copy and no allocation per block).
struct Blocks {
    left: u64,
}

impl Body for Blocks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&BLOCK)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left * BLOCK_SIZE as u64)
    }
}

type Reply = Response<Either<Full<Bytes>, Blocks>>;

fn plain(body: Bytes) -> Reply {
    let mut response = Response::new(Either::Left(Full::new(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    response
}

/// `mib=N` from the query, as the bench app reads it (default 1).
fn mib(query: Option<&str>) -> u64 {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.strip_prefix("mib="))
        .filter(|value| !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|value| value.parse().ok())
        .next_back()
        .unwrap_or(1)
}

/// Hash the body frame by frame as hyper hands it over; answer its size and
/// SHA-256. A body that fails part way (the client went away) ends the
/// connection without an answer, as there is no one to read it.
async fn upload(body: Incoming) -> Option<Bytes> {
    let mut body = body;
    let mut hash = Sha256::new();
    let mut size: u64 = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.ok()?.into_data() {
            hash.update(&data);
            size += data.len() as u64;
        }
    }
    let mut answer = format!("{size} ");
    for byte in hash.finalize() {
        let _ = write!(answer, "{byte:02x}");
    }
    answer.push('\n');
    Some(Bytes::from(answer))
}

async fn route(request: Request<Incoming>) -> Result<Reply, std::io::Error> {
    match request.uri().path() {
        "/upload" => match upload(request.into_body()).await {
            Some(answer) => Ok(plain(answer)),
            None => Err(std::io::Error::other("request body failed")),
        },
        "/stream" => {
            let Some(bytes) = mib(request.uri().query()).checked_mul(MIB) else {
                let mut response = plain(Bytes::from_static(b"mib too large\n"));
                *response.status_mut() = hyper::StatusCode::BAD_REQUEST;
                return Ok(response);
            };
            let blocks = bytes / BLOCK_SIZE as u64;
            let mut response = Response::new(Either::Right(Blocks { left: blocks }));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/octet-stream"),
            );
            Ok(response)
        }
        _ => Ok(plain(Bytes::from_static(HELLO))),
    }
}

async fn serve(listener: TcpListener, max_buf_size: Option<usize>) {
    let mut builder = http1::Builder::new();
    if let Some(bound) = max_buf_size {
        builder.max_buf_size(bound);
    }
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off briefly instead of spinning.
                eprintln!("accept: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = builder.serve_connection(TokioIo::new(stream), service_fn(route));
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}

async fn run(options: Options) -> std::io::Result<()> {
    let listener = TcpListener::bind(options.bind).await?;
    let local = listener.local_addr()?;
    eprintln!("Listening at: http://{local} ({})", std::process::id());
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = serve(listener, options.max_buf_size) => {}
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("hyper-hello: {message}");
            eprintln!("usage: hyper-hello [--bind HOST:PORT] [--threads N] [--max-buf-size BYTES]");
            return ExitCode::from(2);
        }
    };
    let runtime = if options.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.threads)
            .enable_all()
            .build()
    };
    let result = runtime.and_then(|rt| rt.block_on(run(options)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hyper-hello: {error}");
            ExitCode::FAILURE
        }
    }
}
