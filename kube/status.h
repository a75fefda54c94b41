#pragma once
// Errors are values. A Status carries an HTTP-style code and a Kubernetes `reason` so that an error
// raised deep in the store can become a faithful `Status` body at the API edge without translation.

#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace kube {

// One field's problem in an Invalid (422) error, as metav1.StatusCause.
struct StatusCause {
  std::string reason;  // FieldValueInvalid, FieldValueRequired, ...
  std::string message;
  std::string field;   // e.g. "spec.size"
};

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(int code, std::string reason, std::string message)
      : code_(code), reason_(std::move(reason)), message_(std::move(message)) {}

  static Status ok() { return {}; }
  static Status badRequest(std::string m) { return {400, "BadRequest", std::move(m)}; }
  static Status unauthorized(std::string m) { return {401, "Unauthorized", std::move(m)}; }
  static Status forbidden(std::string m) { return {403, "Forbidden", std::move(m)}; }
  static Status notFound(std::string m) { return {404, "NotFound", std::move(m)}; }
  static Status methodNotAllowed(std::string m) { return {405, "MethodNotAllowed", std::move(m)}; }
  static Status alreadyExists(std::string m) { return {409, "AlreadyExists", std::move(m)}; }
  static Status conflict(std::string m) { return {409, "Conflict", std::move(m)}; }
  static Status gone(std::string m) { return {410, "Expired", std::move(m)}; }
  static Status tooLarge(std::string m) { return {413, "RequestEntityTooLarge", std::move(m)}; }
  static Status unsupportedMediaType(std::string m) { return {415, "UnsupportedMediaType", std::move(m)}; }
  static Status invalid(std::string m) { return {422, "Invalid", std::move(m)}; }
  static Status internal(std::string m) { return {500, "InternalError", std::move(m)}; }
  static Status unavailable(std::string m) { return {503, "ServiceUnavailable", std::move(m)}; }
  static Status timeout(std::string m) { return {504, "Timeout", std::move(m)}; }

  bool isOk() const { return code_ == 0; }
  explicit operator bool() const { return isOk(); }
  int code() const { return code_; }
  const std::string& reason() const { return reason_; }
  const std::string& message() const { return message_; }
  const std::vector<StatusCause>& causes() const {
    static const std::vector<StatusCause> kNone;
    return causes_ ? *causes_ : kNone;
  }
  Status withCauses(std::vector<StatusCause> causes) const {
    Status s = *this;
    s.causes_ = std::make_shared<const std::vector<StatusCause>>(std::move(causes));
    return s;
  }
  std::string toString() const {
    return isOk() ? "OK" : std::to_string(code_) + " " + reason_ + ": " + message_;
  }

 private:
  int code_ = 0;
  std::string reason_;
  std::string message_;
  std::shared_ptr<const std::vector<StatusCause>> causes_;
};

// StatusOr<T>: a value or the error that prevented it.
template <class T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(T value) : v_(std::move(value)) {}             // NOLINT(google-explicit-constructor)
  StatusOr(Status status) : v_(std::move(status)) {}      // NOLINT(google-explicit-constructor)

  bool isOk() const { return v_.index() == 0; }
  explicit operator bool() const { return isOk(); }
  const Status& status() const {
    static const Status kOk;
    return isOk() ? kOk : std::get<1>(v_);
  }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &std::get<0>(v_); }
  const T* operator->() const { return &std::get<0>(v_); }
  T& operator*() & { return std::get<0>(v_); }
  const T& operator*() const& { return std::get<0>(v_); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace kube
