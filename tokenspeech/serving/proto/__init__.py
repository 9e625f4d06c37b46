"""Generated protobuf and gRPC stubs of ``proto/tokenspeech/v1/speech.proto`` (do not edit; see ``protogen``)."""
