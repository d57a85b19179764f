package io.lakehouse.trino.pii;

/**
 * Why a value could not be decrypted, why the keystore could not be used, or why the user may not
 * decrypt at all. {@link #configuration()} tells a setup problem (no keystore, no master key, a
 * damaged file) from a bad value; {@link #denied()} is a refusal: the user is not a reader, or who
 * the readers are cannot be known (then nobody is).
 */
public final class PiiException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private enum Kind { VALUE, CONFIGURATION, DENIED }

    private final Kind kind;

    private PiiException(String message, Kind kind, Throwable cause) {
        super(message, cause);
        this.kind = kind;
    }

    static PiiException value(String message) {
        return new PiiException(message, Kind.VALUE, null);
    }

    static PiiException value(String message, Throwable cause) {
        return new PiiException(message, Kind.VALUE, cause);
    }

    static PiiException configuration(String message) {
        return new PiiException(message, Kind.CONFIGURATION, null);
    }

    static PiiException configuration(String message, Throwable cause) {
        return new PiiException(message, Kind.CONFIGURATION, cause);
    }

    static PiiException denied(String message) {
        return new PiiException(message, Kind.DENIED, null);
    }

    static PiiException denied(String message, Throwable cause) {
        return new PiiException(message, Kind.DENIED, cause);
    }

    public boolean configuration() {
        return kind == Kind.CONFIGURATION;
    }

    public boolean denied() {
        return kind == Kind.DENIED;
    }
}
