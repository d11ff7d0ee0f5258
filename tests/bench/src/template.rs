//! The few numbers of `template.yaml` the cost model and the SQS path stage need: each
//! function's `MemorySize` (its own value, else `Globals: Function:`) and the `BatchSize` of
//! the event source mapping that reads its queue, read from the text, so the report follows
//! the template.

/// Lambda's own default when neither the function nor `Globals` sets `MemorySize`.
const LAMBDA_DEFAULT_MEMORY_MB: u32 = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionSettings {
    pub memory_mb: u32,
    /// `BatchSize` of its SQS event source; `None` for a function without one (ingest).
    pub batch_size: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub ingest: FunctionSettings,
    pub route: FunctionSettings,
    pub dispatch: FunctionSettings,
}

impl Settings {
    pub fn read() -> Settings {
        let path = crate::workspace_root().join("template.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        Settings::parse(&text)
    }

    pub fn parse(text: &str) -> Settings {
        // `event_source`: the AWS::Lambda::EventSourceMapping that reads the function's
        // queue (its work queue, for dispatch; the retry queue's has the same batch size).
        let function = |name: &str, event_source: Option<&str>| {
            let block = resource_block(text, name)
                .unwrap_or_else(|| panic!("template.yaml has no resource {name}"));
            FunctionSettings {
                memory_mb: number(&block, "MemorySize")
                    .or_else(|| number(&globals_function(text), "MemorySize"))
                    .unwrap_or(LAMBDA_DEFAULT_MEMORY_MB),
                batch_size: event_source
                    .and_then(|source| resource_block(text, source))
                    .and_then(|source| number(&source, "BatchSize")),
            }
        };
        Settings {
            ingest: function("IngestFunction", None),
            route: function("RouteFunction", Some("IntakeEventSource")),
            dispatch: function("DispatchFunction", Some("DispatchEventSource")),
        }
    }
}

/// The lines of the resource `name` (indented two spaces under `Resources:`), up to the
/// next resource or top-level key.
fn resource_block(text: &str, name: &str) -> Option<Vec<String>> {
    let header = format!("  {name}:");
    let mut lines = text.lines().skip_while(|line| line.trim_end() != header);
    lines.next()?;
    Some(
        lines
            .take_while(|line| line.trim().is_empty() || line.starts_with("   "))
            .map(str::to_string)
            .collect(),
    )
}

/// The lines of `Globals: Function:` (empty when absent).
fn globals_function(text: &str) -> Vec<String> {
    let mut lines = text
        .lines()
        .skip_while(|line| line.trim_end() != "Globals:");
    if lines.next().is_none() {
        return Vec::new();
    }
    lines
        .take_while(|line| line.trim().is_empty() || line.starts_with(' '))
        .skip_while(|line| line.trim_end() != "  Function:")
        .skip(1)
        .take_while(|line| line.trim().is_empty() || line.starts_with("   "))
        .map(str::to_string)
        .collect()
}

/// The first `key: <number>` in `lines` (a trailing comment allowed); `None` when absent or
/// not a literal number (`!Ref …`).
fn number(lines: &[String], key: &str) -> Option<u32> {
    lines.iter().find_map(|line| {
        let value = line.trim().strip_prefix(key)?.strip_prefix(':')?;
        let value = value.split('#').next()?.trim();
        value.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
Globals:
  Function:
    Timeout: 5
    MemorySize: 512

Resources:
  IngestFunction:
    Type: AWS::Serverless::Function
    Properties:
      MemorySize: 128
      Timeout: 10 # GitLab
  RouteFunction:
    Type: AWS::Serverless::Function
    Properties:
      Timeout: !Ref FunctionTimeoutSeconds
      BatchSize: 9 # not an event source's
  DispatchFunction:
    Type: AWS::Serverless::Function
    Properties:
      MemorySize: 256 # more CPU
  IntakeEventSource:
    Type: AWS::Lambda::EventSourceMapping
    Properties:
      BatchSize: 7 # a comment
  DispatchEventSource:
    Type: AWS::Lambda::EventSourceMapping
    Properties:
      BatchSize: !Ref Size
  Other:
    Properties:
      MemorySize: 4096
      BatchSize: 3
";

    #[test]
    fn reads_each_function_then_globals_then_the_lambda_default() {
        let settings = Settings::parse(SAMPLE);
        assert_eq!(
            settings.ingest,
            FunctionSettings {
                memory_mb: 128,
                batch_size: None
            }
        );
        // No MemorySize of its own: Globals'. A commented BatchSize still parses.
        assert_eq!(
            settings.route,
            FunctionSettings {
                memory_mb: 512,
                batch_size: Some(7)
            }
        );
        // A `!Ref` is not a number; the next resource's values are not this one's.
        assert_eq!(
            settings.dispatch,
            FunctionSettings {
                memory_mb: 256,
                batch_size: None
            }
        );
        let without_globals = SAMPLE.replace("    MemorySize: 512\n", "");
        assert_eq!(
            Settings::parse(&without_globals).route.memory_mb,
            LAMBDA_DEFAULT_MEMORY_MB
        );
    }

    #[test]
    fn the_real_template_sets_memory_and_batch_sizes() {
        let settings = Settings::read();
        assert_eq!(settings.ingest.batch_size, None);
        for function in [settings.route, settings.dispatch] {
            assert!(matches!(function.batch_size, Some(1..=10)));
        }
        for function in [settings.ingest, settings.route, settings.dispatch] {
            assert!((128..=10_240).contains(&function.memory_mb));
        }
    }
}
