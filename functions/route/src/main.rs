//! route: intake queue → one dispatch message per subscribed cluster.

// The handler's future (route, then settle each message) nests deeper than rustc's default
// layout query depth.
#![recursion_limit = "256"]

use aws_lambda_events::event::sqs::SqsEvent;
use fluxrelay_adapters::lambda::{RouteFunction, init_tracing};
use fluxrelay_adapters::lambda_aws;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

// One invocation at a time per execution environment, on a fraction of a vCPU: worker
// threads would add memory (stacks, malloc arenas) and start-up time, not speed.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    init_tracing();
    let function = RouteFunction::from_env(&lambda_aws::from_process_env()?).await?;
    run(service_fn(|event: LambdaEvent<SqsEvent>| {
        function.handle(event)
    }))
    .await
}
