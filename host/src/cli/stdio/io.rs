//! The bridge's pipes, both bounded: stdin is read by a task into a small
//! channel of lines (each at most [`MAX_LINE`] bytes), and stdout is written
//! by a task from a small channel of batches. A gateway that stops reading
//! stdout stalls the bridge's loop, which then stops reading stdin and
//! stops taking events: memory stays bounded, and unanswered deliveries
//! make the connector buffer.

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader,
};
use tokio::sync::{mpsc, oneshot};

/// Longest input line; longer ones are answered with an error and skipped.
pub const MAX_LINE: usize = 4 << 20;
/// Lines read ahead of the loop.
const INPUT_QUEUE: usize = 16;
/// Batches queued for the writer (each about [`BATCH_BYTES`]).
const OUTPUT_QUEUE: usize = 4;
/// The loop hands a batch to the writer at this size, and takes no new
/// work while its batch is this big and the writer is behind.
pub const BATCH_BYTES: usize = 64 * 1024;

/// One item read from stdin.
#[derive(Debug)]
pub enum Input {
    /// A line without its terminator (not blank).
    Line(Vec<u8>),
    /// A line longer than [`MAX_LINE`] (its length), skipped.
    TooLong(usize),
    /// End of input: the gateway is gone.
    Eof,
    /// stdin cannot be read (treated as the end of input).
    Failed(std::io::Error),
}

/// Reads `reader` line by line into a bounded channel.
pub fn read_lines(reader: impl AsyncRead + Unpin + Send + 'static) -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel(INPUT_QUEUE);
    tokio::spawn(async move {
        let mut reader = BufReader::with_capacity(64 * 1024, reader);
        loop {
            let item = next_line(&mut reader).await;
            let end = matches!(item, Input::Eof | Input::Failed(_));
            if tx.send(item).await.is_err() || end {
                break;
            }
        }
    });
    rx
}

/// The next non-blank line, bounded by [`MAX_LINE`].
async fn next_line(reader: &mut (impl AsyncBufRead + Unpin)) -> Input {
    let mut line = Vec::new();
    let mut length = 0usize;
    loop {
        let chunk = match reader.fill_buf().await {
            Ok(chunk) => chunk,
            Err(e) => return Input::Failed(e),
        };
        if chunk.is_empty() {
            // A last line without a newline still counts.
            return if length == 0 || is_blank(&line) && length <= MAX_LINE {
                Input::Eof
            } else {
                finish(line, length)
            };
        }
        let (part, used, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(at) => (&chunk[..at], at + 1, true),
            None => (chunk, chunk.len(), false),
        };
        length += part.len();
        if length <= MAX_LINE {
            line.extend_from_slice(part);
        } else {
            // Too long: keep counting, stop keeping.
            line = Vec::new();
        }
        reader.consume(used);
        if done {
            if length <= MAX_LINE && is_blank(&line) {
                line.clear();
                length = 0;
                continue;
            }
            return finish(line, length);
        }
    }
}

fn finish(mut line: Vec<u8>, length: usize) -> Input {
    if length > MAX_LINE {
        return Input::TooLong(length);
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Input::Line(line)
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// The loop's side of stdout: a batch being filled and the writer's queue.
#[derive(Debug)]
pub struct Output {
    pub batch: Vec<u8>,
    pub queue: mpsc::Sender<Vec<u8>>,
    /// The writer's end: `Err` when stdout could not be written.
    pub done: oneshot::Receiver<std::io::Result<()>>,
}

impl Output {
    /// A writer task on `writer`.
    pub fn spawn(writer: impl AsyncWrite + Unpin + Send + 'static) -> Output {
        let (queue, mut rx) = mpsc::channel::<Vec<u8>>(OUTPUT_QUEUE);
        let (done_tx, done) = oneshot::channel();
        tokio::spawn(async move {
            let mut writer = writer;
            let mut result = Ok(());
            while let Some(batch) = rx.recv().await {
                if let Err(e) = write(&mut writer, &batch).await {
                    result = Err(e);
                    break;
                }
            }
            let _ = done_tx.send(result);
        });
        Output {
            batch: Vec::new(),
            queue,
            done,
        }
    }

    /// Appends one JSON line to the batch.
    pub fn line(&mut self, value: &impl serde::Serialize) {
        if serde_json::to_writer(&mut self.batch, value).is_ok() {
            self.batch.push(b'\n');
        }
    }

    /// Whether the loop should take no new work until the writer catches up.
    pub fn is_full(&self) -> bool {
        self.batch.len() >= BATCH_BYTES
    }
}

async fn write(writer: &mut (impl AsyncWrite + Unpin), batch: &[u8]) -> std::io::Result<()> {
    writer.write_all(batch).await?;
    writer.flush().await
}
