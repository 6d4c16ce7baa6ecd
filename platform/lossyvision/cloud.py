"""Why a cloud URL (``s3://``, ``gs://``, any remote fsspec URL) cannot be used, in one line that says what to set.

Every remote path goes through :func:`lossyvision.store.filesystem`, which records the URL here
(:func:`remember`). When a command then meets an error of the cloud's client libraries (botocore,
aiobotocore, aiohttp, google-auth) or one that s3fs/gcsfs translated (a ``PermissionError`` with no
errno, a ``FileNotFoundError`` for a missing bucket), the CLI turns it with :func:`cloud_error` into
a :class:`CloudError`: the URL, what went wrong (no credentials, endpoint unreachable, access
denied, no such bucket) and which variables to set. It exits 2, like any other bad input.

fsspec's ``exists``/``isfile``/``isdir`` answer False for every error; readers that are about to say
"not found" for a remote URL call :func:`lossyvision.store.check_reachable` first, so that "not found"
means not found.
"""

from __future__ import annotations

import os

#: The last remote URL a filesystem was opened for (the driver is the only one that reports errors).
_last_url: str | None = None

#: Client errors that mean "no usable credentials were found".
_NO_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                   "NoAuthTokenError", "DefaultCredentialsError", "RefreshError", "TokenRetrievalError",
                   "SSOTokenLoadError", "UnauthorizedSSOTokenError", "ProfileNotFound"}
#: Client errors that mean "the endpoint cannot be reached".
_UNREACHABLE = {"EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "ReadTimeoutError",
                "ClientConnectorError", "ClientConnectorDNSError", "ServerDisconnectedError", "FSTimeoutError",
                "ProxyConnectionError", "SSLError", "ClientOSError", "ServerTimeoutError",
                "InvalidEndpointURL", "ConnectionRefusedError", "TimeoutError"}
#: Error codes of S3-like services that mean "who you are is not allowed".
_DENIED_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                 "InvalidToken", "AllAccessDisabled", "AccountProblem", "403", "Forbidden"}
#: Modules whose exceptions are the cloud client's, never lossyvision's or the local disk's.
_CLIENT_MODULES = ("botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "google.auth", "google.api_core",
                   "adlfs", "azure")


class CloudError(ValueError):
    """A remote URL that cannot be used: the message names it and what to set."""


def remember(uri: str) -> None:
    """Record the remote URL a filesystem is being opened for (:func:`lossyvision.store.filesystem`)."""
    global _last_url
    _last_url = str(uri)


def last_url() -> str | None:
    return _last_url


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def what_to_set(url: str, problem: str) -> str:
    """Which settings fix ``problem`` ('credentials', 'endpoint', 'denied', 'bucket') for ``url``'s scheme."""
    scheme = _scheme(url)
    if scheme in ("s3", "s3a"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        now = f" (now {endpoint})" if endpoint else " (unset: AWS itself)"
        if problem == "credentials":
            return ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), and AWS_ENDPOINT_URL for an "
                    "S3-compatible store such as MinIO")
        if problem == "endpoint":
            return f"check AWS_ENDPOINT_URL{now} and the network"
        if problem == "denied":
            return (f"check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), the bucket's policy, and "
                    f"AWS_ENDPOINT_URL{now}")
        return f"create the bucket, or fix the URL (AWS_ENDPOINT_URL{now} names the store it is looked up in)"
    if scheme in ("gs", "gcs"):
        if problem in ("credentials", "denied"):
            return "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file (or run `gcloud auth " \
                   "application-default login`) and check the bucket's permissions"
        if problem == "endpoint":
            return "check the network (and STORAGE_EMULATOR_HOST, if set)"
        return "create the bucket, or fix the URL"
    return f"check the {scheme or 'remote'} filesystem's credentials and address (its fsspec options)"


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


def classify(exc: BaseException) -> tuple[str, str] | None:
    """``(problem, detail)`` when ``exc`` (or an exception it came from) is a cloud client's, else None.

    ``problem`` is 'credentials', 'endpoint', 'denied', 'bucket' or 'other'.
    """
    for e in _chain(exc):
        name, module = type(e).__name__, type(e).__module__ or ""
        client = module.startswith(_CLIENT_MODULES)
        text = _first_line(e)
        if name in _NO_CREDENTIALS and (client or module.startswith("google")):
            return "credentials", text
        if name in _UNREACHABLE and (client or name in ("ConnectionRefusedError", "TimeoutError")
                                     and _last_url is not None):
            return "endpoint", text
        code = _code(e)
        if code in _DENIED_CODES or (isinstance(e, PermissionError) and e.errno is None and e.filename is None):
            return "denied", text
        if code == "NoSuchBucket" or (isinstance(e, FileNotFoundError) and e.errno is None
                                      and "bucket does not exist" in text.lower()):
            return "bucket", text
        if client:
            return "other", f"{name}: {text}"
    return None


_SAYS = {"credentials": "no credentials found", "endpoint": "cannot reach the endpoint",
         "denied": "access denied", "bucket": "the bucket does not exist", "other": "cannot be used"}


def message(url: str, problem: str, detail: str) -> str:
    """The one line: URL, what is wrong (the client's words), what to set."""
    return f"{url}: {_SAYS[problem]} ({detail}); {what_to_set(url, problem)}"


def cloud_error(exc: BaseException, url: str | None = None) -> CloudError | None:
    """``exc`` as a :class:`CloudError` naming ``url`` (default: the last remote URL opened), or None
    when it is not a cloud client's error or no remote URL was opened."""
    if isinstance(exc, CloudError):
        return exc
    url = url or _last_url
    if url is None:
        return None
    found = classify(exc)
    if found is None:
        return None
    return CloudError(message(url, *found))


def _bucket(url: str) -> str | None:
    rest = url.split("://", 1)[1] if "://" in url else ""
    return rest.split("/", 1)[0] or None if _scheme(url) in ("s3", "s3a", "gs", "gcs") else None
