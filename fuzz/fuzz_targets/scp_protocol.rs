//! The SCP protocol as the sink (`scp -t`) reads it: the first line is the
//! command's words (`scp::parse_args`), the rest is the client's stream,
//! split by `scp::read_line` (bounded lines) into `T`, `C`, `D` and `E`
//! messages (`parse_times`, `parse_entry`), with each file's data and
//! acknowledgement (`read_ack`) consumed the way the sink consumes them. A
//! name that parses is one plain component: it never leaves the directory
//! it is sent into, and nesting stays within `MAX_DEPTH`.
#![no_main]

use std::sync::LazyLock;

use ferry_dataplane::scp::{
    MAX_DEPTH, MAX_LINE, parse_args, parse_entry, parse_times, read_ack, read_line,
};
use ferry_proto::vpath;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, BufReader};

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
});

async fn sink(stream: &[u8], target: &str) {
    let mut r = BufReader::new(stream);
    let mut dirs = vec![vpath::clean("/", target)];
    while let Ok(Some(line)) = read_line(&mut r).await {
        assert!(line.len() <= MAX_LINE && !line.contains(&b'\n'));
        let Some((&kind, rest)) = line.split_first() else {
            continue;
        };
        let rest = String::from_utf8_lossy(rest).into_owned();
        let here = dirs.last().expect("the target stays").clone();
        match kind {
            b'T' => {
                if parse_times(&rest).is_err() {
                    return;
                }
            }
            b'C' | b'D' => {
                let Ok((_mode, size, name)) = parse_entry(&rest) else {
                    return; // fatal: the sink stops
                };
                let vp = vpath::clean(&here, &name);
                assert_eq!(vpath::parent(&vp), here, "{name:?} left {here:?}");
                assert_eq!(vpath::base_name(&vp), name, "{name:?} changed");
                if kind == b'C' {
                    let mut data = (&mut r).take(size);
                    let copied = tokio::io::copy(&mut data, &mut tokio::io::sink()).await;
                    if copied.map_or(true, |n| n < size) {
                        return; // connection lost during transfer
                    }
                    if read_ack(&mut r).await.is_err() {
                        return;
                    }
                } else if dirs.len() > MAX_DEPTH {
                    return;
                } else {
                    dirs.push(vp);
                }
            }
            b'E' => {
                if dirs.len() > 1 {
                    dirs.pop();
                } else {
                    return;
                }
            }
            1 => {}
            _ => return,
        }
        assert!(dirs.len() <= MAX_DEPTH + 1);
    }
}

fuzz_target!(|data: &[u8]| {
    let (command, stream) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let words: Vec<String> = String::from_utf8_lossy(command)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let target = match parse_args(&words) {
        Ok(args) => {
            assert!(!args.paths.is_empty());
            if !args.sink {
                return; // source mode reads only acknowledgements
            }
            assert_eq!(args.paths.len(), 1);
            args.paths[0].clone()
        }
        Err(_) => "/".to_string(),
    };
    RUNTIME.block_on(sink(stream, &target));
});
