// Tokenizers built from GGUF metadata (SentencePiece and byte-level BPE), matching llama.cpp.
export {
  Tokenizer,
  TokenType,
  TokenAttr,
  type EncodeOptions,
  type DecodeOptions,
  type DecoderOptions,
  type StreamingDecoder,
} from './tokenizer';
