//! dispatch: dispatch queue → coalesced Flux triggers per cluster → delivered, retried
//! with backoff, or dead-lettered with a reason.

use aws_lambda_events::event::sqs::SqsEvent;
use fluxrelay_adapters::cluster::KubeClusters;
use fluxrelay_adapters::lambda::{DispatchFunction, init_tracing};
use fluxrelay_adapters::lambda_aws;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

// One invocation at a time per execution environment, on a fraction of a vCPU: worker
// threads would add memory (stacks, malloc arenas) and start-up time, not speed.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    init_tracing();
    let aws = lambda_aws::from_process_env()?;
    let function = DispatchFunction::from_env(&aws, KubeClusters::for_lambda(&aws)?).await?;
    run(service_fn(|event: LambdaEvent<SqsEvent>| {
        function.handle(event)
    }))
    .await
}
