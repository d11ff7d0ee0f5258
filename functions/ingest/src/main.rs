//! ingest: GitLab webhook (Function URL) → authenticated, parsed, enqueued → 202.

use fluxrelay_adapters::lambda::{IngestFunction, init_tracing};
use lambda_http::{Error, Request, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let function = IngestFunction::from_env().await?;
    run(service_fn(|request: Request| function.handle(request))).await
}
