//! Reading a Server-Sent Events stream as it arrives: the CLI follows a task's events with it
//! (and the tests read Easel's streams with it).

/// One frame of the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// An event: its `id` (if it has one), `event` name (`message` when unnamed) and `data`.
    Event { id: Option<String>, event: String, data: String },
    /// A comment line (a heartbeat).
    Comment(String),
}

/// Cuts the bytes of a stream into frames, whatever the chunks' boundaries.
#[derive(Debug, Default)]
pub struct SseReader {
    buffer: String,
}

impl SseReader {
    /// Adds a chunk and returns the frames it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Frame> {
        self.buffer.push_str(&String::from_utf8_lossy(chunk));
        // Line ends may be CRLF; frames end at a blank line.
        if self.buffer.contains('\r') {
            self.buffer = self.buffer.replace("\r\n", "\n");
        }
        let mut frames = Vec::new();
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            frames.extend(parse(&block));
        }
        frames
    }
}

fn parse(block: &str) -> Option<Frame> {
    let (mut id, mut event, mut data, mut comment) = (None, String::from("message"), Vec::new(), None);
    for line in block.lines() {
        if let Some(text) = line.strip_prefix(':') {
            comment = Some(text.trim().to_owned());
        } else {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => id = Some(value.to_owned()),
                "event" => event = value.to_owned(),
                "data" => data.push(value.to_owned()),
                _ => {}
            }
        }
    }
    if data.is_empty() {
        return comment.map(Frame::Comment);
    }
    Some(Frame::Event { id, event, data: data.join("\n") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_found_across_chunks() {
        let mut reader = SseReader::default();
        assert!(reader.push(b"id: 3\nevent: prog").is_empty());
        let frames = reader.push(b"ress\ndata: {\"a\":1}\n\n:heartbeat\n\ndata: x\r\ndata: y\r\n\r\n");
        assert_eq!(
            frames,
            [
                Frame::Event { id: Some("3".into()), event: "progress".into(), data: "{\"a\":1}".into() },
                Frame::Comment("heartbeat".into()),
                Frame::Event { id: None, event: "message".into(), data: "x\ny".into() },
            ]
        );
    }
}
