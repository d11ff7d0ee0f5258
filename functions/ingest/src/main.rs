//! ingest: GitLab webhook (Function URL) → authenticated, parsed, enqueued → 202.

use fluxrelay_adapters::lambda::{IngestFunction, init_tracing};
use fluxrelay_adapters::lambda_aws;
use lambda_http::{Error, Request, run, service_fn};

// One invocation at a time per execution environment, on a fraction of a vCPU: worker
// threads would add memory (stacks, malloc arenas) and start-up time, not speed.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    init_tracing();
    let function = IngestFunction::from_env(&lambda_aws::from_process_env()?).await?;
    run(service_fn(|request: Request| function.handle(request))).await
}
