//! route: intake queue → one dispatch message per subscribed cluster.

use aws_lambda_events::event::sqs::SqsEvent;
use fluxrelay_adapters::lambda::{RouteFunction, init_tracing};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let function = RouteFunction::from_env().await?;
    run(service_fn(|event: LambdaEvent<SqsEvent>| {
        function.handle(event)
    }))
    .await
}
