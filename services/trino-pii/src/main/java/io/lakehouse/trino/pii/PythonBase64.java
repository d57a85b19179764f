package io.lakehouse.trino.pii;

/**
 * Base64 decoding exactly as the Python keystore's {@code _b64d} does it, so that every payload
 * decodes here to the very bytes it decodes to there (tests/vectors/pii_v1.json holds variants).
 *
 * <p>{@code _b64d(text)} is {@code base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))}: the
 * text must be ASCII; {@code -} and {@code _} stand for {@code +} and {@code /} (which are accepted
 * too); then CPython's {@code binascii.a2b_base64} in its non-strict mode: characters outside the
 * alphabet are skipped, a pad sequence completing a quad ends the input, and a final partial quad
 * of one character, or of two or three without padding, is an error. This is a port of that loop
 * (CPython 3.11 Modules/binascii.c), not a general-purpose decoder.
 */
final class PythonBase64 {
    private static final byte[] TABLE = new byte[128];

    static {
        java.util.Arrays.fill(TABLE, (byte) -1);
        String alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for (int i = 0; i < alphabet.length(); i++) {
            TABLE[alphabet.charAt(i)] = (byte) i;
        }
        TABLE['-'] = 62; // urlsafe_b64decode translates - to + and _ to / first
        TABLE['_'] = 63;
    }

    private PythonBase64() {}

    /** The bytes of {@code text[from, to)}; throws {@code IllegalArgumentException} as Python raises ValueError. */
    static byte[] decode(byte[] text, int from, int to) {
        int length = to - from;
        for (int i = from; i < to; i++) {
            if (text[i] < 0) {
                throw new IllegalArgumentException("string argument should contain only ASCII characters");
            }
        }
        int padded = length + Math.floorMod(-length, 4);
        byte[] out = new byte[(padded + 3) / 4 * 3];
        int written = 0;
        int quadPos = 0;
        int leftChar = 0;
        int pads = 0;
        for (int i = 0; i < padded; i++) {
            int ch = i < length ? text[from + i] : '=';
            if (ch == '=') {
                if (quadPos >= 2 && quadPos + ++pads >= 4) {
                    return java.util.Arrays.copyOf(out, written); // a pad sequence ends the input
                }
                continue;
            }
            int value = TABLE[ch];
            if (value < 0) {
                continue; // not in the alphabet: skipped (non-strict mode)
            }
            pads = 0;
            switch (quadPos) {
                case 0 -> {
                    quadPos = 1;
                    leftChar = value;
                }
                case 1 -> {
                    quadPos = 2;
                    out[written++] = (byte) ((leftChar << 2) | (value >> 4));
                    leftChar = value & 0x0f;
                }
                case 2 -> {
                    quadPos = 3;
                    out[written++] = (byte) ((leftChar << 4) | (value >> 2));
                    leftChar = value & 0x03;
                }
                default -> {
                    quadPos = 0;
                    out[written++] = (byte) ((leftChar << 6) | value);
                    leftChar = 0;
                }
            }
        }
        if (quadPos == 1) {
            throw new IllegalArgumentException(
                    "Invalid base64-encoded string: number of data characters cannot be 1 more than a multiple of 4");
        }
        if (quadPos != 0) {
            throw new IllegalArgumentException("Incorrect padding");
        }
        return java.util.Arrays.copyOf(out, written);
    }

    static byte[] decode(String text) {
        byte[] bytes = text.getBytes(java.nio.charset.StandardCharsets.UTF_8);
        return decode(bytes, 0, bytes.length);
    }
}
