//! Compiles `proto/unio/v1/*.proto` with protox (a pure-Rust protobuf compiler,
//! so no system `protoc` is needed) and generates tonic servers and clients.
//! The encoded descriptor set is written to `OUT_DIR` for server reflection.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut protos: Vec<PathBuf> = fs::read_dir("proto/unio/v1")?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    protos.sort();

    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(&protos, ["proto"])?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("unio_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    let mut builder = tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Without the `connect(dst)` constructors: they clash with RoomService.Connect.
        .build_transport(false)
        // INVALID_ARGUMENT for undecodable messages, small stream buffers.
        .codec_path("crate::codec::UnioCodec");
    // A room event is as large as its largest kind (`joined` alone is over
    // 500 bytes): the large kinds are boxed, so the frequent small ones
    // (presence, signals, media state) are small too, in every queue and
    // in every room's replay.
    for kind in [
        "joined",
        "participant_joined",
        "chat",
        "call",
        "waiting",
        "meeting_updated",
    ] {
        builder = builder.boxed(format!(".unio.v1.ServerEvent.event.{kind}"));
    }
    builder.compile_fds(descriptors)?;
    Ok(())
}
