//! A bare hyper 1.x HTTP/1.1 server that answers every request with
//! `Hello, world!`: the ceiling for the S1 benchmark on this machine.
//!
//! It owns nothing but a listener and hyper's connection loop; there is no
//! Python, no routing and no body handling, so the CPU it spends per request
//! is what the network stack and hyper cost on their own. It binds the given
//! address (default `127.0.0.1:0`), prints Siesta's ready line
//! `Listening at: http://HOST:PORT (PID)` on stderr and exits on SIGTERM or
//! SIGINT. `--threads 1` (default) runs a current-thread tokio runtime,
//! `--threads N` a multi-thread runtime with N workers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

const HELLO: &[u8] = b"Hello, world!";

/// Command-line settings: where to listen and how many runtime threads.
struct Options {
    /// Address to bind; port 0 asks the kernel for a free port.
    bind: SocketAddr,
    /// 1 = current-thread runtime, more = multi-thread runtime.
    threads: usize,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        threads: 1,
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
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(options)
}

async fn hello(_request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(HELLO)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    Ok(response)
}

async fn serve(listener: TcpListener) {
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
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(hello))
                .await;
        });
    }
}

async fn run(bind: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(bind).await?;
    let local = listener.local_addr()?;
    eprintln!("Listening at: http://{local} ({})", std::process::id());
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = serve(listener) => {}
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
            eprintln!("usage: hyper-hello [--bind HOST:PORT] [--threads N]");
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
    let result = runtime.and_then(|rt| rt.block_on(run(options.bind)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hyper-hello: {error}");
            ExitCode::FAILURE
        }
    }
}
